package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type franz struct{ o opts }

func (f *franz) baseOpts(extra ...kgo.Opt) []kgo.Opt {
	level := kgo.LogLevelInfo
	if f.o.verbose {
		level = kgo.LogLevelDebug
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(f.o.bootstrap),
		kgo.WithLogger(kgo.BasicLogger(os.Stderr, level, func() string { return time.Now().Format("15:04:05.000 ") })),
	}
	return append(opts, extra...)
}

func (f *franz) newClient(extra ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(f.baseOpts(extra...)...)
	if err != nil {
		fail("kgo.NewClient: %v", err)
	}
	return cl
}

func (f *franz) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.o.timeout)
}

// errFields describes err for the JSON output: its Kafka error name and code if it has one.
func franzErr(err error) map[string]any {
	if err == nil {
		return map[string]any{"error": nil, "code": 0}
	}
	out := map[string]any{"error": err.Error(), "code": -1}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		out["code"] = ke.Code
		out["name"] = ke.Message
	}
	return out
}

func merge(a map[string]any, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

func (f *franz) describe(adm *kadm.Client, ctx context.Context, step string) {
	td, err := adm.ListTopics(ctx, f.o.topic)
	ev := map[string]any{"step": step}
	if err != nil {
		emit(merge(ev, franzErr(err)))
		return
	}
	d, ok := td[f.o.topic]
	if !ok {
		emit(merge(ev, map[string]any{"error": "topic missing from metadata", "code": -1}))
		return
	}
	var parts []map[string]any
	for _, p := range d.Partitions.Sorted() {
		parts = append(parts, merge(map[string]any{"partition": p.Partition, "leader": p.Leader,
			"leader_epoch": p.LeaderEpoch, "replicas": p.Replicas, "isr": p.ISR}, map[string]any{"perr": errString(p.Err)}))
	}
	ev["topic_id_set"] = d.ID != kadm.TopicID{}
	ev["partitions"] = parts
	emit(merge(ev, franzErr(d.Err)))
}

func errString(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}

func (f *franz) createTopic(adm *kadm.Client, ctx context.Context, partitions int) {
	r, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, f.o.topic)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		fail("create topic %s: %v", f.o.topic, err)
	}
}

func (f *franz) admin() {
	cl := f.newClient()
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := f.ctx()
	defer cancel()

	r, err := adm.CreateTopic(ctx, int32(f.o.partitions), 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000")}, f.o.topic)
	if err == nil {
		err = r.Err
	}
	emit(merge(map[string]any{"step": "create", "partitions": r.NumPartitions, "replication_factor": r.ReplicationFactor}, franzErr(err)))

	r, err = adm.CreateTopic(ctx, int32(f.o.partitions), 1, nil, f.o.topic)
	if err == nil {
		err = r.Err
	}
	emit(merge(map[string]any{"step": "create_again"}, franzErr(err)))

	r, err = adm.CreateTopic(ctx, 1, 3, nil, f.o.topic+"-rf3")
	if err == nil {
		err = r.Err
	}
	emit(merge(map[string]any{"step": "create_rf3"}, franzErr(err)))

	all, err := adm.ListTopics(ctx)
	emit(merge(map[string]any{"step": "list", "topics": all.Names()}, franzErr(err)))

	f.describe(adm, ctx, "describe")

	dr, err := adm.DeleteTopic(ctx, f.o.topic)
	if err == nil {
		err = dr.Err
	}
	emit(merge(map[string]any{"step": "delete"}, franzErr(err)))

	// Kafka deletes asynchronously; give the metadata a few seconds to catch up. A fresh client
	// each time: kadm answers ListTopics from kgo's metadata cache (MetadataMinAge), which a
	// DeleteTopics does not invalidate.
	var names []string
	for i := 0; i < 50; i++ {
		fresh := f.newClient()
		all, err = kadm.NewClient(fresh).ListTopics(ctx)
		fresh.Close()
		names = all.Names()
		if err == nil && !contains(names, f.o.topic) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	emit(merge(map[string]any{"step": "list_after_delete", "topics": names}, franzErr(err)))

	dr, err = adm.DeleteTopic(ctx, f.o.topic)
	if err == nil {
		err = dr.Err
	}
	emit(merge(map[string]any{"step": "delete_again"}, franzErr(err)))
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func franzCodec(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	fail("unknown compression %q", name)
	panic("unreachable")
}

func toKgo(m msg, topic string) *kgo.Record {
	r := &kgo.Record{Topic: topic, Key: []byte(m.key), Value: []byte(m.value)}
	for _, h := range m.headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	return r
}

func kgoHeaders(r *kgo.Record) [][2]string {
	var out [][2]string
	for _, h := range r.Headers {
		out = append(out, [2]string{h.Key, string(h.Value)})
	}
	return out
}

// produceAll produces msgs asynchronously (in order), waits for every acknowledgement and
// emits one "ack" line each. Returns the number of failed records.
func (f *franz) produceAll(ctx context.Context, cl *kgo.Client, msgs []msg, extra map[string]any) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for _, m := range msgs {
		m := m
		wg.Add(1)
		cl.Produce(ctx, toKgo(m, f.o.topic), func(r *kgo.Record, err error) {
			defer wg.Done()
			ev := merge(map[string]any{"event": "ack", "i": m.idx, "partition": r.Partition, "offset": r.Offset}, franzErr(err))
			emit(merge(ev, extra))
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed
}

func (f *franz) produceCmd(msgs []msg) {
	cl := f.newClient(kgo.DefaultProduceTopic(f.o.topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(franzCodec(f.o.compression)), kgo.ProducerLinger(20*time.Millisecond))
	defer cl.Close()
	ctx, cancel := f.ctx()
	defer cancel()
	if f.o.create > 0 {
		f.createTopic(kadm.NewClient(cl), ctx, f.o.create)
	}
	failed := f.produceAll(ctx, cl, msgs, nil)
	emit(map[string]any{"event": "produced", "n": len(msgs), "failed": failed})
}

func (f *franz) endOffsets(ctx context.Context, adm *kadm.Client) {
	ends, err := adm.ListEndOffsets(ctx, f.o.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		fail("ListEndOffsets: %v", err)
	}
	out := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[fmt.Sprint(o.Partition)] = o.Offset })
	committed, err := adm.ListCommittedOffsets(ctx, f.o.topic)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		fail("ListCommittedOffsets: %v", err)
	}
	lso := map[string]int64{}
	committed.Each(func(o kadm.ListedOffset) { lso[fmt.Sprint(o.Partition)] = o.Offset })
	emit(map[string]any{"event": "end_offsets", "offsets": out, "stable_offsets": lso})
}

func (f *franz) consume() {
	iso := kgo.ReadUncommitted()
	if f.o.isolation == "committed" {
		iso = kgo.ReadCommitted()
	}
	cl := f.newClient(kgo.ConsumeTopics(f.o.topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(iso), kgo.FetchMaxWait(500*time.Millisecond))
	defer cl.Close()
	ctx, cancel := f.ctx()
	defer cancel()
	n := 0
	var lingerEnd time.Time
	for {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := cl.PollFetches(pctx)
		pcancel()
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				emit(merge(map[string]any{"event": "fetch_error", "partition": p}, franzErr(err)))
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			ev := recordEvent("record", r.Partition, r.Offset, r.Key, r.Value, kgoHeaders(r))
			ev["producer_id"], ev["producer_epoch"] = r.ProducerID, r.ProducerEpoch
			emit(ev)
		})
		if ctx.Err() != nil {
			break
		}
		if n >= f.o.expect && lingerEnd.IsZero() {
			lingerEnd = time.Now().Add(f.o.linger)
		}
		if !lingerEnd.IsZero() && time.Now().After(lingerEnd) {
			break
		}
	}
	f.endOffsets(context.Background(), kadm.NewClient(cl))
	emit(map[string]any{"event": "consumed", "n": n, "timed_out": ctx.Err() != nil})
}

func franzBalancer(name string) []kgo.GroupBalancer {
	switch name {
	case "", "cooperative-sticky":
		return []kgo.GroupBalancer{kgo.CooperativeStickyBalancer()}
	case "range":
		return []kgo.GroupBalancer{kgo.RangeBalancer()}
	case "sticky":
		return []kgo.GroupBalancer{kgo.StickyBalancer()}
	case "roundrobin":
		return []kgo.GroupBalancer{kgo.RoundRobinBalancer()}
	}
	fail("unknown balancer %q", name)
	panic("unreachable")
}

type franzMember struct {
	idx      int
	cl       *kgo.Client
	mu       sync.Mutex
	assigned map[int32]bool
}

func (f *franz) group() {
	ctx, cancel := f.ctx()
	defer cancel()
	admCl := f.newClient()
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	td, err := adm.ListTopics(ctx, f.o.topic)
	if err != nil || td[f.o.topic].Err != nil {
		fail("metadata for %s: %v %v", f.o.topic, err, td[f.o.topic].Err)
	}
	numParts := len(td[f.o.topic].Partitions)

	tracker := newGroupTracker(f.o.expect)
	var members []*franzMember
	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start := func(i int) {
		m := &franzMember{idx: i, assigned: map[int32]bool{}}
		members = append(members, m)
		m.cl = f.newClient(
			kgo.ClientID(fmt.Sprintf("spoolgo-franz-%d", i)),
			kgo.ConsumerGroup(f.o.group), kgo.ConsumeTopics(f.o.topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.Balancers(franzBalancer(f.o.balancer)...),
			kgo.FetchMaxWait(500*time.Millisecond),
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
				m.mu.Lock()
				for _, p := range a[f.o.topic] {
					m.assigned[p] = true
				}
				m.mu.Unlock()
				emit(map[string]any{"event": "assigned", "member": m.idx, "partitions": a[f.o.topic]})
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, r map[string][]int32) {
				// Commit everything processed before giving partitions up (franz-go's
				// recommended pattern with BlockRebalanceOnPoll).
				err := cl.CommitUncommittedOffsets(ctx)
				m.mu.Lock()
				for _, p := range r[f.o.topic] {
					delete(m.assigned, p)
				}
				m.mu.Unlock()
				emit(merge(map[string]any{"event": "revoked", "member": m.idx, "partitions": r[f.o.topic]}, franzErr(err)))
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) {
				m.mu.Lock()
				for _, p := range l[f.o.topic] {
					delete(m.assigned, p)
				}
				m.mu.Unlock()
				emit(map[string]any{"event": "lost", "member": m.idx, "partitions": l[f.o.topic]})
			}),
		)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				fetches := m.cl.PollFetches(runCtx)
				_, gen := m.cl.GroupMetadata()
				fetches.EachError(func(t string, p int32, err error) {
					if !errors.Is(err, context.Canceled) {
						emit(merge(map[string]any{"event": "fetch_error", "member": m.idx, "partition": p}, franzErr(err)))
					}
				})
				fetches.EachRecord(func(r *kgo.Record) {
					tracker.add(m.idx, gen, r.Partition, r.Offset, r.Key, r.Value)
				})
				m.cl.AllowRebalance()
			}
		}()
	}

	// Stable: the broker says Stable with every member, and the members' own assignments
	// partition the topic.
	waitStable := func() {
		stableDeadline := time.Now().Add(f.o.timeout / 2)
		for {
			dg, err := adm.DescribeGroups(ctx, f.o.group)
			g := dg[f.o.group]
			owned := map[int32]int{}
			for _, m := range members {
				m.mu.Lock()
				for p := range m.assigned {
					owned[p]++
				}
				m.mu.Unlock()
			}
			disjoint := len(owned) == numParts
			for _, c := range owned {
				disjoint = disjoint && c == 1
			}
			if err == nil && g.Err == nil && g.State == "Stable" && len(g.Members) == len(members) && disjoint &&
				len(g.AssignedPartitions()[f.o.topic]) == numParts {
				var ms []map[string]any
				for _, gm := range g.Members {
					var parts []int32
					if ca, ok := gm.Assigned.AsConsumer(); ok {
						for _, t := range ca.Topics {
							parts = append(parts, t.Partitions...)
						}
					}
					sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
					ms = append(ms, map[string]any{"member_id": gm.MemberID, "client_id": gm.ClientID, "partitions": parts})
				}
				emit(map[string]any{"event": "stable", "state": g.State, "protocol": g.Protocol,
					"protocol_type": g.ProtocolType, "members": ms})
				return
			}
			if time.Now().After(stableDeadline) {
				fail("group %s not stable with %d members: state %q, %d members, owned %v, err %v / %v",
					f.o.group, len(members), g.State, len(g.Members), owned, err, g.Err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	produce := func(msgs []msg) {
		pcl := f.newClient(kgo.DefaultProduceTopic(f.o.topic), kgo.RequiredAcks(kgo.AllISRAcks()))
		failed := f.produceAll(ctx, pcl, msgs, nil)
		pcl.Close()
		if failed > 0 {
			fail("%d records failed to produce", failed)
		}
	}

	driveGroup(ctx, f.o, tracker, start, waitStable, produce)
	stopRun()
	wg.Wait()
	timedOut := ctx.Err() != nil

	cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer ccancel()
	for _, m := range members {
		err := m.cl.CommitUncommittedOffsets(cctx)
		emit(merge(map[string]any{"event": "commit", "member": m.idx}, franzErr(err)))
	}
	f.lag(cctx, adm, "lag_before_close")
	for _, m := range members {
		m.cl.Close() // leaves the group
	}
	f.lag(cctx, adm, "lag_after_close")
	emit(map[string]any{"event": "consumed", "n": tracker.total, "timed_out": timedOut})
}

// lag emits kadm's view of the group: state, members, and per-partition commit/end/lag.
func (f *franz) lag(ctx context.Context, adm *kadm.Client, event string) {
	lags, err := adm.Lag(ctx, f.o.group)
	if err != nil {
		emit(merge(map[string]any{"event": event}, franzErr(err)))
		return
	}
	l := lags[f.o.group]
	var parts []map[string]any
	for _, ml := range l.Lag.Sorted() {
		if ml.Topic != f.o.topic {
			continue
		}
		parts = append(parts, map[string]any{"partition": ml.Partition, "commit": ml.Commit.At,
			"end": ml.End.Offset, "lag": ml.Lag, "member": ml.Member != nil, "error": errString(ml.Err)})
	}
	emit(merge(map[string]any{"event": event, "state": l.State, "members": len(l.Members), "partitions": parts,
		"total_lag": l.Lag.Total()}, franzErr(l.Error())))
}

func (f *franz) offsets() {
	cl := f.newClient()
	defer cl.Close()
	ctx, cancel := f.ctx()
	defer cancel()
	f.lag(ctx, kadm.NewClient(cl), "lag")
}

func (f *franz) txn() {
	cl := f.newClient(kgo.DefaultProduceTopic(f.o.topic), kgo.TransactionalID(f.o.txnID),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.TransactionTimeout(30*time.Second))
	defer cl.Close()
	ctx, cancel := f.ctx()
	defer cancel()
	if f.o.create > 0 {
		f.createTopic(kadm.NewClient(cl), ctx, f.o.create)
	}
	base := 0
	for _, t := range txnPlan {
		if err := cl.BeginTransaction(); err != nil {
			fail("BeginTransaction: %v", err)
		}
		msgs := txnMessages(t.name, f.o.n, &base)
		failed := f.produceAll(ctx, cl, msgs, map[string]any{"txn": t.name})
		if err := cl.Flush(ctx); err != nil {
			fail("Flush: %v", err)
		}
		end := kgo.TryAbort
		if t.commit && failed == 0 {
			end = kgo.TryCommit
		}
		err := cl.EndTransaction(ctx, end)
		emit(merge(map[string]any{"event": "end_txn", "txn": t.name, "commit": end == kgo.TryCommit, "failed": failed}, franzErr(err)))
		if err != nil {
			fail("EndTransaction(%s): %v", t.name, err)
		}
	}
}

// deleteRecords: 10 records with timestamps base+i seconds into partition 0 of a new one-partition
// topic, DeleteRecords below offset 5, then the start offset, what a consumer from the start
// gets first, and the offsets ListOffsets gives for the records' timestamps.
func (f *franz) deleteRecords() {
	ctx, cancel := f.ctx()
	defer cancel()
	cl := f.newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer cl.Close()
	adm := kadm.NewClient(cl)
	f.createTopic(adm, ctx, 1)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := 0; i < 10; i++ {
		r := &kgo.Record{Topic: f.o.topic, Partition: 0, Value: []byte(fmt.Sprint(i)), Timestamp: base.Add(time.Duration(i) * time.Second)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			fail("produce: %v", err)
		}
	}
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: f.o.topic, Partition: 0, At: 5})
	dr, err := adm.DeleteRecords(ctx, os)
	if err == nil {
		err = dr.Error()
	}
	low := int64(-1)
	if r, ok := dr.Lookup(f.o.topic, 0); ok {
		low = r.LowWatermark
	}
	emit(merge(map[string]any{"event": "delete_records", "low_watermark": low}, franzErr(err)))

	st, err := adm.ListStartOffsets(ctx, f.o.topic)
	if err == nil {
		err = st.Error()
	}
	start := int64(-1)
	if o, ok := st.Lookup(f.o.topic, 0); ok {
		start = o.Offset
	}
	emit(merge(map[string]any{"event": "start_offset", "offset": start}, franzErr(err)))

	c := f.newClient(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{f.o.topic: {0: kgo.NewOffset().AtStart()}}))
	fetches := c.PollFetches(ctx)
	c.Close()
	first := int64(-1)
	if recs := fetches.Records(); len(recs) > 0 {
		first = recs[0].Offset
	}
	emit(merge(map[string]any{"event": "first_consumed", "offset": first}, franzErr(fetches.Err())))

	// kadm.ListOffsetsAfterMilli falls back to the end offset when the broker finds nothing; the
	// raw answer is what matters here.
	for _, i := range []int{0, 3, 7} {
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = f.o.topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition = 0
		rp.CurrentLeaderEpoch = -1
		rp.Timestamp = base.Add(time.Duration(i) * time.Second).UnixMilli()
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			fail("ListOffsets: %v", err)
		}
		p := resp.Topics[0].Partitions[0]
		emit(map[string]any{"event": "offset_for_time", "record": i, "offset": p.Offset,
			"timestamp_delta_ms": p.Timestamp - base.UnixMilli(), "code": p.ErrorCode})
	}
}
