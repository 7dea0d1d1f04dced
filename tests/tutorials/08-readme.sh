#!/usr/bin/env bash
# The README's "A first session" runs as written: its sh block is taken from README.md itself,
# with only the broker address changed to this test's, and each line is run as a user would
# paste it. The broker runs as the README says (`serve --num-partitions 3`); the README's claims
# are then checked: three keys on three partitions, a key always on the same one, four
# messages read back with partition and offset, the same after a restart.
source "$(dirname "$0")/lib.sh"
: "${RESTART_BROKER:?set RESTART_BROKER to a command that restarts the broker}"
README="$TUTORIALS_DIR/../../README.md"

# The first sh block after the heading.
awk '/^## A first session/ { on = 1 } on && /^```sh/ { block = 1; next } block && /^```/ { exit } block { print }' \
  "$README" | sed "s/127\.0\.0\.1:9092/$BOOTSTRAP/g" >"$WORK/session.sh"
grep -q 'kcat' "$WORK/session.sh" || fail "no kcat session found in README.md"

# run_readme_line N: runs the Nth command of the README block (comments dropped).
run_readme_line() {
  local line
  line=$(grep -v '^\s*#' "$WORK/session.sh" | grep -v '^\s*$' | sed -n "${1}p")
  [ -n "$line" ] || fail "README block has no command $1"
  run bash -c "$line"
}

step "Produce keyed messages, as the README types them"
run_readme_line 1

step "Read everything from the beginning, with partition and offset"
run_readme_line 2
expect_lines 4
cp "$OUT" "$WORK/read"
# "%p/%o %k: %s": three keys on three different partitions; alice's two on the same one.
partition_of() { grep -E "^[0-9]+/[0-9]+ $1: " "$WORK/read" | cut -d/ -f1 | sort -u; }
[ "$(partition_of alice | wc -l)" -eq 1 ] || fail "alice's messages are on more than one partition"
partitions=$(for key in alice sam zoe; do partition_of "$key"; done | sort -u | wc -l)
[ "$partitions" -eq 3 ] || fail "the three keys landed on $partitions partitions, the README says three"
expect_match '^[0-9]+/[0-9]+ alice: signed up$'
expect_match '^[0-9]+/[0-9]+ alice: ordered tea$'

step "Topic and partition layout"
run_readme_line 3
expect_match 'topic "events" with 3 partitions'

step "Stop the broker, start it again, and run the consumer again"
echo "\$ $RESTART_BROKER"
eval "$RESTART_BROKER" || fail "RESTART_BROKER failed"
run_readme_line 2
expect_same_lines "$WORK/read" "$OUT" "the messages read after the restart"

echo "readme: OK"
