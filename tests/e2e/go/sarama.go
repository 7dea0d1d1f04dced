package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

type saramaClient struct {
	o     opts
	addrs []string
}

func newSarama(o opts) *saramaClient {
	sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	if o.verbose {
		sarama.DebugLogger = log.New(os.Stderr, "[sarama debug] ", log.Ltime|log.Lmicroseconds)
	}
	return &saramaClient{o: o, addrs: []string{o.bootstrap}}
}

func (s *saramaClient) config() *sarama.Config {
	cfg := sarama.NewConfig()
	if s.o.version != "" {
		v, err := sarama.ParseKafkaVersion(s.o.version)
		if err != nil {
			fail("version %q: %v", s.o.version, err)
		}
		cfg.Version = v
	}
	cfg.ClientID = "spoolgo-sarama"
	cfg.Metadata.AllowAutoTopicCreation = false
	return cfg
}

// producerConfig: acks=all, idempotent (which needs MaxOpenRequests=1).
func (s *saramaClient) producerConfig() *sarama.Config {
	cfg := s.config()
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Producer.Return.Successes = true
	cfg.Producer.Return.Errors = true
	cfg.Producer.Flush.Frequency = 20 * time.Millisecond
	switch s.o.compression {
	case "none":
		cfg.Producer.Compression = sarama.CompressionNone
	case "gzip":
		cfg.Producer.Compression = sarama.CompressionGZIP
	case "snappy":
		cfg.Producer.Compression = sarama.CompressionSnappy
	case "lz4":
		cfg.Producer.Compression = sarama.CompressionLZ4
	case "zstd":
		cfg.Producer.Compression = sarama.CompressionZSTD
	default:
		fail("unknown compression %q", s.o.compression)
	}
	return cfg
}

func saramaErr(err error) map[string]any {
	if err == nil {
		return map[string]any{"error": nil, "code": 0}
	}
	out := map[string]any{"error": err.Error(), "code": -1}
	var ke sarama.KError
	if errors.As(err, &ke) {
		out["code"] = int16(ke)
	}
	return out
}

func (s *saramaClient) newAdmin(cfg *sarama.Config) sarama.ClusterAdmin {
	adm, err := sarama.NewClusterAdmin(s.addrs, cfg)
	if err != nil {
		fail("NewClusterAdmin: %v", err)
	}
	return adm
}

func (s *saramaClient) createTopic(partitions int) {
	adm := s.newAdmin(s.config())
	defer adm.Close()
	if err := adm.CreateTopic(s.o.topic, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: 1}, false); err != nil {
		fail("create topic %s: %v", s.o.topic, err)
	}
}

func (s *saramaClient) admin() {
	adm := s.newAdmin(s.config())
	defer adm.Close()
	retention := "3600000"
	err := adm.CreateTopic(s.o.topic, &sarama.TopicDetail{NumPartitions: int32(s.o.partitions), ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false)
	emit(merge(map[string]any{"step": "create"}, saramaErr(err)))

	err = adm.CreateTopic(s.o.topic, &sarama.TopicDetail{NumPartitions: int32(s.o.partitions), ReplicationFactor: 1}, false)
	emit(merge(map[string]any{"step": "create_again"}, saramaErr(err)))

	err = adm.CreateTopic(s.o.topic+"-rf3", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 3}, false)
	emit(merge(map[string]any{"step": "create_rf3"}, saramaErr(err)))

	topics, err := adm.ListTopics()
	emit(merge(map[string]any{"step": "list", "topics": names(topics)}, saramaErr(err)))
	if d, ok := topics[s.o.topic]; ok {
		emit(map[string]any{"step": "list_detail", "partitions": d.NumPartitions, "replication_factor": d.ReplicationFactor,
			"retention_ms": derefString(d.ConfigEntries["retention.ms"])})
	}

	md, err := adm.DescribeTopics([]string{s.o.topic})
	ev := map[string]any{"step": "describe"}
	if err != nil || len(md) != 1 {
		emit(merge(ev, saramaErr(err)))
	} else {
		var parts []map[string]any
		sort.Slice(md[0].Partitions, func(i, j int) bool { return md[0].Partitions[i].ID < md[0].Partitions[j].ID })
		for _, p := range md[0].Partitions {
			parts = append(parts, map[string]any{"partition": p.ID, "leader": p.Leader, "leader_epoch": p.LeaderEpoch,
				"replicas": p.Replicas, "isr": p.Isr, "perr": kerrOrNil(p.Err)})
		}
		ev["partitions"] = parts
		emit(merge(ev, saramaErr(kerrAsErr(md[0].Err))))
	}

	err = adm.DeleteTopic(s.o.topic)
	emit(merge(map[string]any{"step": "delete"}, saramaErr(err)))

	var ns []string
	for i := 0; i < 50; i++ {
		topics, err = adm.ListTopics()
		ns = names(topics)
		if err == nil && !contains(ns, s.o.topic) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	emit(merge(map[string]any{"step": "list_after_delete", "topics": ns}, saramaErr(err)))

	err = adm.DeleteTopic(s.o.topic)
	emit(merge(map[string]any{"step": "delete_again"}, saramaErr(err)))
}

func derefString(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func kerrOrNil(k sarama.KError) any {
	if k == sarama.ErrNoError {
		return nil
	}
	return k.Error()
}

func kerrAsErr(k sarama.KError) error {
	if k == sarama.ErrNoError {
		return nil
	}
	return k
}

func names(m map[string]sarama.TopicDetail) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func toSarama(m msg, topic string) *sarama.ProducerMessage {
	pm := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(m.key), Value: sarama.StringEncoder(m.value), Metadata: m.idx}
	for _, h := range m.headers {
		pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h[0]), Value: []byte(h[1])})
	}
	return pm
}

// sendAll sends msgs through p and waits for every success or error, emitting "ack" lines.
func (s *saramaClient) sendAll(p sarama.AsyncProducer, msgs []msg, extra map[string]any) int {
	done := make(chan int)
	go func() {
		failed := 0
		for i := 0; i < len(msgs); i++ {
			select {
			case m := <-p.Successes():
				emit(merge(merge(map[string]any{"event": "ack", "i": m.Metadata, "partition": m.Partition, "offset": m.Offset},
					saramaErr(nil)), extra))
			case e := <-p.Errors():
				failed++
				emit(merge(merge(map[string]any{"event": "ack", "i": e.Msg.Metadata, "partition": e.Msg.Partition,
					"offset": e.Msg.Offset}, saramaErr(e.Err)), extra))
			case <-time.After(s.o.timeout):
				fail("no acknowledgement within %s (%d of %d)", s.o.timeout, i, len(msgs))
			}
		}
		done <- failed
	}()
	for _, m := range msgs {
		p.Input() <- toSarama(m, s.o.topic)
	}
	return <-done
}

func (s *saramaClient) produceCmd(msgs []msg) {
	if s.o.create > 0 {
		s.createTopic(s.o.create)
	}
	p, err := sarama.NewAsyncProducer(s.addrs, s.producerConfig())
	if err != nil {
		fail("NewAsyncProducer: %v", err)
	}
	failed := s.sendAll(p, msgs, nil)
	if err := p.Close(); err != nil {
		fail("producer Close: %v", err)
	}
	emit(map[string]any{"event": "produced", "n": len(msgs), "failed": failed})
}

func (s *saramaClient) endOffsets(partitions []int32) {
	out := map[string]int64{}
	lso := map[string]int64{}
	for _, iso := range []sarama.IsolationLevel{sarama.ReadUncommitted, sarama.ReadCommitted} {
		cfg := s.config()
		cfg.Consumer.IsolationLevel = iso
		cl, err := sarama.NewClient(s.addrs, cfg)
		if err != nil {
			fail("NewClient: %v", err)
		}
		for _, p := range partitions {
			o, err := cl.GetOffset(s.o.topic, p, sarama.OffsetNewest)
			if err != nil {
				fail("GetOffset %d: %v", p, err)
			}
			if iso == sarama.ReadCommitted {
				lso[fmt.Sprint(p)] = o
			} else {
				out[fmt.Sprint(p)] = o
			}
		}
		cl.Close()
	}
	emit(map[string]any{"event": "end_offsets", "offsets": out, "stable_offsets": lso})
}

func (s *saramaClient) consume() {
	cfg := s.config()
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.MaxWaitTime = 500 * time.Millisecond
	if s.o.isolation == "committed" {
		cfg.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	consumer, err := sarama.NewConsumer(s.addrs, cfg)
	if err != nil {
		fail("NewConsumer: %v", err)
	}
	partitions, err := consumer.Partitions(s.o.topic)
	if err != nil {
		fail("Partitions: %v", err)
	}
	type rec struct {
		m *sarama.ConsumerMessage
	}
	ch := make(chan rec, 1024)
	var pcs []sarama.PartitionConsumer
	for _, p := range partitions {
		pc, err := consumer.ConsumePartition(s.o.topic, p, sarama.OffsetOldest)
		if err != nil {
			fail("ConsumePartition %d: %v", p, err)
		}
		pcs = append(pcs, pc)
		go func() {
			for m := range pc.Messages() {
				ch <- rec{m}
			}
		}()
		go func() {
			for e := range pc.Errors() {
				emit(merge(map[string]any{"event": "fetch_error", "partition": e.Partition}, saramaErr(e.Err)))
			}
		}()
	}
	deadline := time.After(s.o.timeout)
	n := 0
	timedOut := false
	var linger <-chan time.Time
	if s.o.expect == 0 {
		linger = time.After(s.o.linger)
	}
loop:
	for {
		select {
		case r := <-ch:
			n++
			var hs [][2]string
			for _, h := range r.m.Headers {
				hs = append(hs, [2]string{string(h.Key), string(h.Value)})
			}
			emit(recordEvent("record", r.m.Partition, r.m.Offset, r.m.Key, r.m.Value, hs))
			if n == s.o.expect {
				linger = time.After(s.o.linger)
			}
		case <-linger:
			break loop
		case <-deadline:
			timedOut = true
			break loop
		}
	}
	for _, pc := range pcs {
		pc.AsyncClose()
	}
	consumer.Close()
	s.endOffsets(partitions)
	emit(map[string]any{"event": "consumed", "n": n, "timed_out": timedOut})
}

type saramaMember struct {
	idx        int
	s          *saramaClient
	tracker    *groupTracker
	mu         sync.Mutex
	claims     []int32
	generation int32
	memberID   string
}

func (m *saramaMember) Setup(sess sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	m.claims = append([]int32(nil), sess.Claims()[m.s.o.topic]...)
	sort.Slice(m.claims, func(i, j int) bool { return m.claims[i] < m.claims[j] })
	m.generation = sess.GenerationID()
	m.memberID = sess.MemberID()
	m.mu.Unlock()
	emit(map[string]any{"event": "assigned", "member": m.idx, "partitions": m.claims, "generation": sess.GenerationID()})
	return nil
}

func (m *saramaMember) Cleanup(sess sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	m.claims = nil
	m.mu.Unlock()
	emit(map[string]any{"event": "revoked", "member": m.idx, "generation": sess.GenerationID()})
	return nil
}

func (m *saramaMember) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			m.tracker.add(m.idx, sess.GenerationID(), msg.Partition, msg.Offset, msg.Key, msg.Value)
			sess.MarkMessage(msg, "")
		case <-sess.Context().Done():
			return nil
		}
	}
}

func saramaStrategy(name string) sarama.BalanceStrategy {
	switch name {
	case "", "range":
		return sarama.NewBalanceStrategyRange()
	case "roundrobin":
		return sarama.NewBalanceStrategyRoundRobin()
	case "sticky":
		return sarama.NewBalanceStrategySticky()
	}
	fail("unknown balancer %q", name)
	panic("unreachable")
}

func (s *saramaClient) group() {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.timeout)
	defer cancel()
	adm := s.newAdmin(s.config())
	defer adm.Close()
	md, err := adm.DescribeTopics([]string{s.o.topic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrNoError {
		fail("metadata for %s: %v %v", s.o.topic, err, md)
	}
	numParts := len(md[0].Partitions)

	tracker := newGroupTracker(s.o.expect)
	runCtx, stopRun := context.WithCancel(ctx)
	var members []*saramaMember
	var groups []sarama.ConsumerGroup
	var wg sync.WaitGroup
	start := func(i int) {
		cfg := s.config()
		cfg.ClientID = fmt.Sprintf("spoolgo-sarama-%d", i)
		cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
		cfg.Consumer.Return.Errors = true
		cfg.Consumer.MaxWaitTime = 500 * time.Millisecond
		cfg.Consumer.Offsets.AutoCommit.Interval = 500 * time.Millisecond
		cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{saramaStrategy(s.o.balancer)}
		g, err := sarama.NewConsumerGroup(s.addrs, s.o.group, cfg)
		if err != nil {
			fail("NewConsumerGroup: %v", err)
		}
		m := &saramaMember{idx: i, s: s, tracker: tracker}
		groups = append(groups, g)
		members = append(members, m)
		go func() {
			for e := range g.Errors() {
				emit(merge(map[string]any{"event": "group_error", "member": m.idx}, saramaErr(e)))
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				if err := g.Consume(runCtx, []string{s.o.topic}, m); err != nil && !errors.Is(err, sarama.ErrClosedConsumerGroup) {
					emit(merge(map[string]any{"event": "consume_error", "member": m.idx}, saramaErr(err)))
					time.Sleep(200 * time.Millisecond)
				}
			}
		}()
	}

	waitStable := func() {
		stableDeadline := time.Now().Add(s.o.timeout / 2)
		for {
			groupsDesc, err := adm.DescribeConsumerGroups([]string{s.o.group})
			var gd *sarama.GroupDescription
			if err == nil && len(groupsDesc) == 1 {
				gd = groupsDesc[0]
			}
			owned := map[int32]int{}
			gens := map[int32]bool{}
			for _, m := range members {
				m.mu.Lock()
				for _, p := range m.claims {
					owned[p]++
				}
				gens[m.generation] = true
				m.mu.Unlock()
			}
			ok := len(owned) == numParts && len(gens) == 1
			for _, c := range owned {
				ok = ok && c == 1
			}
			if ok && gd != nil && gd.State == "Stable" && len(gd.Members) == len(members) {
				var ms []map[string]any
				for id, gm := range gd.Members {
					var parts []int32
					if a, err := gm.GetMemberAssignment(); err == nil && a != nil {
						parts = a.Topics[s.o.topic]
					}
					sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
					ms = append(ms, map[string]any{"member_id": id, "client_id": gm.ClientId, "partitions": parts})
				}
				emit(map[string]any{"event": "stable", "state": gd.State, "protocol": gd.Protocol,
					"protocol_type": gd.ProtocolType, "members": ms})
				return
			}
			if time.Now().After(stableDeadline) {
				state := ""
				if gd != nil {
					state = gd.State
				}
				fail("group %s not stable with %d members: state %q, owned %v, generations %v, err %v",
					s.o.group, len(members), state, owned, gens, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	produce := func(msgs []msg) {
		p, err := sarama.NewAsyncProducer(s.addrs, s.producerConfig())
		if err != nil {
			fail("NewAsyncProducer: %v", err)
		}
		failed := s.sendAll(p, msgs, nil)
		p.Close()
		if failed > 0 {
			fail("%d records failed to produce", failed)
		}
	}

	driveGroup(ctx, s.o, tracker, start, waitStable, produce)
	timedOut := ctx.Err() != nil
	// Ending the sessions commits the marked offsets (sarama's offset manager flushes on release).
	stopRun()
	wg.Wait()
	parts := make([]int32, numParts)
	for i := range parts {
		parts[i] = int32(i)
	}
	s.lag(adm, parts, "lag_before_close")
	for i, g := range groups {
		if err := g.Close(); err != nil {
			emit(merge(map[string]any{"event": "close_error", "member": i}, saramaErr(err)))
		}
	}
	s.lag(adm, parts, "lag_after_close")
	emit(map[string]any{"event": "consumed", "n": tracker.total, "timed_out": timedOut})
}

// lag: the group's state and members (DescribeGroups), its committed offsets (OffsetFetch) and
// the partitions' end offsets (ListOffsets), as sarama reports them.
func (s *saramaClient) lag(adm sarama.ClusterAdmin, parts []int32, event string) {
	ev := map[string]any{"event": event}
	gds, err := adm.DescribeConsumerGroups([]string{s.o.group})
	if err != nil || len(gds) != 1 {
		emit(merge(ev, saramaErr(err)))
		return
	}
	ev["state"] = gds[0].State
	ev["members"] = len(gds[0].Members)
	resp, err := adm.ListConsumerGroupOffsets(s.o.group, map[string][]int32{s.o.topic: parts})
	if err != nil {
		emit(merge(ev, saramaErr(err)))
		return
	}
	cl, err := sarama.NewClient(s.addrs, s.config())
	if err != nil {
		fail("NewClient: %v", err)
	}
	defer cl.Close()
	var out []map[string]any
	var total int64
	for _, p := range parts {
		b := resp.GetBlock(s.o.topic, p)
		end, err := cl.GetOffset(s.o.topic, p, sarama.OffsetNewest)
		if err != nil {
			fail("GetOffset: %v", err)
		}
		row := map[string]any{"partition": p, "end": end}
		if b == nil {
			row["commit"] = nil
			row["lag"] = -1
		} else {
			row["commit"] = b.Offset
			row["error"] = kerrOrNil(b.Err)
			lag := end - b.Offset
			if b.Offset < 0 {
				lag = end
			}
			row["lag"] = lag
			total += lag
		}
		out = append(out, row)
	}
	ev["partitions"] = out
	ev["total_lag"] = total
	emit(merge(ev, saramaErr(kerrAsErr(resp.Err))))
}

func (s *saramaClient) offsets() {
	adm := s.newAdmin(s.config())
	defer adm.Close()
	md, err := adm.DescribeTopics([]string{s.o.topic})
	if err != nil || len(md) != 1 {
		fail("DescribeTopics: %v", err)
	}
	var parts []int32
	for _, p := range md[0].Partitions {
		parts = append(parts, p.ID)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	s.lag(adm, parts, "lag")
}

func (s *saramaClient) txn() {
	if s.o.create > 0 {
		s.createTopic(s.o.create)
	}
	cfg := s.producerConfig()
	cfg.Producer.Transaction.ID = s.o.txnID
	p, err := sarama.NewAsyncProducer(s.addrs, cfg)
	if err != nil {
		fail("NewAsyncProducer (transactional): %v", err)
	}
	defer p.Close()
	base := 0
	for _, t := range txnPlan {
		if err := p.BeginTxn(); err != nil {
			fail("BeginTxn: %v", err)
		}
		msgs := txnMessages(t.name, s.o.n, &base)
		failed := s.sendAll(p, msgs, map[string]any{"txn": t.name})
		commit := t.commit && failed == 0
		if commit {
			err = p.CommitTxn()
		} else {
			err = p.AbortTxn()
		}
		emit(merge(map[string]any{"event": "end_txn", "txn": t.name, "commit": commit, "failed": failed}, saramaErr(err)))
		if err != nil {
			fail("end txn %s: %v", t.name, err)
		}
	}
}
