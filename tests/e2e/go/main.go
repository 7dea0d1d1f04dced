// spoolgo drives two Go Kafka clients, franz-go (kgo + kadm) and IBM/sarama, against a broker
// for tests/e2e/test_go_clients.py. It prints one JSON object per line on stdout; the Python side
// asserts on them. Client logs go to stderr.
//
//	spoolgo <franz|sarama> <command> -bootstrap host:port [flags]
//
// Commands:
//
//	admin     create a topic, create it again, list, describe, delete, delete again
//	produce   produce the records read from stdin (key TAB value [TAB hkey TAB hvalue]...)
//	consume   read a topic from the beginning without a group (-isolation committed|uncommitted)
//	group     run -members consumers in one group; once the group is stable, optionally produce
//	          -produce records, consume until -expect records, commit, describe the group and its lag
//	txn       transactional produce: commit, abort, commit (each -n records)
//	offsets   a group's committed offsets, the partitions' end offsets and the lag
//	delete-records  (franz only) kadm DeleteRecords, then start offset, consume, ListOffsets by time
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

var outMu sync.Mutex

// emit prints one JSON line on stdout.
func emit(fields map[string]any) {
	b, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// fail reports an error as a JSON line and exits 1.
func fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	emit(map[string]any{"event": "fatal", "error": msg})
	fmt.Fprintln(os.Stderr, "spoolgo: "+msg)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000")+" spoolgo: "+format+"\n", args...)
}

type opts struct {
	bootstrap   string
	topic       string
	group       string
	partitions  int
	members     int
	late        int
	produce     int
	expect      int
	n           int
	compression string
	isolation   string
	txnID       string
	prefix      string
	version     string
	balancer    string
	linger      time.Duration
	timeout     time.Duration
	create      int
	verbose     bool
}

// msg is one record to produce.
type msg struct {
	idx     int
	key     string
	value   string
	headers [][2]string
}

// readMessages parses stdin: key TAB value [TAB hkey TAB hvalue]... per line.
func readMessages() []msg {
	var out []msg
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) < 2 || len(f)%2 != 0 {
			fail("bad input line %q", line)
		}
		m := msg{idx: len(out), key: f[0], value: f[1]}
		for i := 2; i < len(f); i += 2 {
			m.headers = append(m.headers, [2]string{f[i], f[i+1]})
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		fail("reading stdin: %v", err)
	}
	return out
}

// generated makes n records for the group and transaction commands: keys repeat over 12 keys.
func generated(prefix string, n int) []msg {
	return generatedRange(prefix, 0, n)
}

// generatedRange makes records from..to-1 of the same sequence.
func generatedRange(prefix string, from, to int) []msg {
	var out []msg
	for i := from; i < to; i++ {
		out = append(out, msg{idx: i, key: fmt.Sprintf("key-%02d", i%12), value: fmt.Sprintf("%s-%04d", prefix, i),
			headers: [][2]string{{"idx", fmt.Sprint(i)}}})
	}
	return out
}

// producePlan is what the group command produces: everything once the group is stable, or, with
// late joiners, the first half before they join and the rest once the bigger group is stable.
func producePlan(o opts) [][]msg {
	if o.produce == 0 {
		return nil
	}
	if o.late == 0 {
		return [][]msg{generated(o.prefix, o.produce)}
	}
	h := o.produce / 2
	return [][]msg{generatedRange(o.prefix, 0, h), generatedRange(o.prefix, h, o.produce)}
}

func recordEvent(event string, partition int32, offset int64, key, value []byte, headers [][2]string) map[string]any {
	hs := make([][]string, 0, len(headers))
	for _, h := range headers {
		hs = append(hs, []string{h[0], h[1]})
	}
	var k any
	if key != nil {
		k = string(key)
	}
	return map[string]any{"event": event, "partition": partition, "offset": offset, "key": k,
		"value": string(value), "headers": hs}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: spoolgo <franz|sarama> <admin|produce|consume|group|txn|offsets> [flags]")
		os.Exit(2)
	}
	client, cmd := os.Args[1], os.Args[2]
	var o opts
	fs := flag.NewFlagSet(client+" "+cmd, flag.ExitOnError)
	fs.StringVar(&o.bootstrap, "bootstrap", "127.0.0.1:9092", "broker address")
	fs.StringVar(&o.topic, "topic", "", "topic")
	fs.StringVar(&o.group, "group", "", "consumer group")
	fs.IntVar(&o.partitions, "partitions", 3, "partitions for admin")
	fs.IntVar(&o.create, "create", 0, "create the topic with this many partitions first (produce, txn)")
	fs.IntVar(&o.members, "members", 3, "group members")
	fs.IntVar(&o.late, "late", 0, "group: members that join only after the first half of -produce was consumed")
	fs.IntVar(&o.produce, "produce", 0, "group: records to produce once the group is stable")
	fs.IntVar(&o.expect, "expect", 0, "records to consume")
	fs.IntVar(&o.n, "n", 10, "txn: records per transaction")
	fs.StringVar(&o.compression, "compression", "none", "none|gzip|snappy|lz4|zstd")
	fs.StringVar(&o.isolation, "isolation", "uncommitted", "committed|uncommitted")
	fs.StringVar(&o.txnID, "txn-id", "", "transactional id")
	fs.StringVar(&o.prefix, "prefix", "rec", "value prefix for generated records")
	fs.StringVar(&o.version, "version", "", "sarama: Kafka version to speak (default: sarama's DefaultVersion)")
	fs.StringVar(&o.balancer, "balancer", "", "group balancer (franz: cooperative-sticky|range|sticky|roundrobin; sarama: range|roundrobin|sticky)")
	fs.DurationVar(&o.linger, "linger", 1500*time.Millisecond, "keep consuming this long after -expect records, to catch extras")
	fs.DurationVar(&o.timeout, "timeout", 40*time.Second, "overall deadline")
	fs.BoolVar(&o.verbose, "verbose", false, "debug-level client logs")
	fs.Parse(os.Args[3:])

	go func() {
		time.Sleep(o.timeout + 20*time.Second)
		fail("hard deadline: still running %s after -timeout", o.timeout+20*time.Second)
	}()

	var c clientImpl
	switch client {
	case "franz":
		c = &franz{o: o}
	case "sarama":
		c = newSarama(o)
	default:
		fail("unknown client %q", client)
	}
	switch cmd {
	case "admin":
		c.admin()
	case "produce":
		c.produceCmd(readMessages())
	case "consume":
		c.consume()
	case "group":
		c.group()
	case "txn":
		c.txn()
	case "offsets":
		c.offsets()
	case "delete-records":
		f, ok := c.(*franz)
		if !ok {
			fail("delete-records is franz-go only")
		}
		f.deleteRecords()
	default:
		fail("unknown command %q", cmd)
	}
}

type clientImpl interface {
	admin()
	produceCmd([]msg)
	consume()
	group()
	txn()
	offsets()
}

// groupTracker follows what each member consumed and was assigned, for the group command.
type groupTracker struct {
	mu       sync.Mutex
	total    int
	reached  chan struct{}
	expect   int
	seen     map[[2]int64]int // (partition, offset) -> deliveries
	reachedC bool
}

func newGroupTracker(expect int) *groupTracker {
	return &groupTracker{reached: make(chan struct{}), expect: expect, seen: map[[2]int64]int{}}
}

// txnPlan is what both clients' transactional producers do: commit, abort, commit.
var txnPlan = []struct {
	name   string
	commit bool
}{{"c1", true}, {"a2", false}, {"c3", true}}

// txnMessages are one transaction's records, numbered after those of the transactions before.
func txnMessages(name string, n int, base *int) []msg {
	msgs := generated(name, n)
	for i := range msgs {
		msgs[i].idx = *base + i
	}
	*base += len(msgs)
	return msgs
}

// driveGroup starts the members, produces the plan (late members join once the first part is
// consumed), and returns when everything was consumed (after a linger) or time ran out.
func driveGroup(ctx context.Context, o opts, tracker *groupTracker, start func(int), waitStable func(), produce func([]msg)) {
	for i := 0; i < o.members-o.late; i++ {
		start(i)
	}
	waitStable()
	plan := producePlan(o)
	if o.late > 0 {
		produce(plan[0])
		if !tracker.waitCount(o.expect-len(plan[1]), time.Now().Add(o.timeout/2)) {
			fail("first half not consumed: %d of %d", tracker.count(), o.expect-len(plan[1]))
		}
		for i := o.members - o.late; i < o.members; i++ {
			start(i)
		}
		waitStable()
		plan = plan[1:]
	}
	for _, msgs := range plan {
		produce(msgs)
	}
	select {
	case <-tracker.reached:
		time.Sleep(o.linger)
	case <-ctx.Done():
	}
}

func (t *groupTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// waitCount waits until at least n records were consumed; false on timeout.
func (t *groupTracker) waitCount(n int, deadline time.Time) bool {
	for t.count() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func (t *groupTracker) add(member int, generation int32, partition int32, offset int64, key, value []byte) {
	ev := recordEvent("record", partition, offset, key, value, nil)
	ev["member"] = member
	ev["generation"] = generation
	emit(ev)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total++
	t.seen[[2]int64{int64(partition), offset}]++
	if t.total >= t.expect && !t.reachedC {
		t.reachedC = true
		close(t.reached)
	}
}
