// Java kafka-clients 4.3.0 consumer-group member for the Spool e2e suite (driven by
// tests/e2e/test_groups_*.py through groups_lib.Worker): subscribe, poll, commitSync.
//
// usage: java GroupConsumer BOOTSTRAP TOPIC GROUP [key=value consumer config]...
//   stdin: "CLOSE" (or EOF) -> consumer.close() and exit 0
//   stdout (tab-separated lines):
//     ASSIGN ms added now | REVOKE ms removed now | LOST ms removed now   (ms since subscribe;
//                                                   partitions as csv; "now" = assignment afterwards)
//     GEN generation member-id                      whenever groupMetadata() changes
//     GOT partition offset key value | COMMIT partition next-offset | CERR text | ERROR text | CLOSED

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;

public class GroupConsumer {
    static final Object LOCK = new Object();

    static void emit(Object... fields) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < fields.length; i++) {
            if (i > 0) sb.append('\t');
            sb.append(fields[i]);
        }
        synchronized (LOCK) {
            System.out.println(sb);
            System.out.flush();
        }
    }

    static String csv(Collection<Integer> parts) {
        StringBuilder sb = new StringBuilder();
        for (int p : new TreeSet<>(parts)) {
            if (sb.length() > 0) sb.append(',');
            sb.append(p);
        }
        return sb.toString();
    }

    static TreeSet<Integer> partitions(Collection<TopicPartition> tps) {
        TreeSet<Integer> out = new TreeSet<>();
        for (TopicPartition tp : tps) out.add(tp.partition());
        return out;
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], group = args[2];
        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("group.id", group);
        cp.put("client.id", "spool-e2e-java-group");
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "earliest");
        cp.put("session.timeout.ms", "6000");
        cp.put("heartbeat.interval.ms", "1000");
        cp.put("fetch.max.wait.ms", "200");
        for (int i = 3; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            cp.put(kv[0], kv[1]);
        }

        AtomicBoolean stop = new AtomicBoolean(false);
        KafkaConsumer<String, String> consumer =
                new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer());
        Thread stdin = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                for (String line; (line = in.readLine()) != null; ) {
                    if (line.trim().equals("CLOSE")) break;
                }
            } catch (Exception ignored) {
                // EOF or closed stdin: close as well
            }
            stop.set(true);
            consumer.wakeup();
        });
        stdin.setDaemon(true);
        stdin.start();

        TreeSet<Integer> owned = new TreeSet<>();
        long[] t0 = {0};
        ConsumerRebalanceListener listener = new ConsumerRebalanceListener() {
            public void onPartitionsRevoked(Collection<TopicPartition> parts) {
                TreeSet<Integer> removed = partitions(parts);
                owned.removeAll(removed);
                emit("REVOKE", (System.nanoTime() - t0[0]) / 1_000_000, csv(removed), csv(owned));
            }

            public void onPartitionsAssigned(Collection<TopicPartition> parts) {
                TreeSet<Integer> added = partitions(parts);
                owned.addAll(added);
                emit("ASSIGN", (System.nanoTime() - t0[0]) / 1_000_000, csv(added), csv(owned));
            }

            public void onPartitionsLost(Collection<TopicPartition> parts) {
                TreeSet<Integer> removed = partitions(parts);
                owned.removeAll(removed);
                emit("LOST", (System.nanoTime() - t0[0]) / 1_000_000, csv(removed), csv(owned));
            }
        };

        String lastGen = "";
        try {
            // Warm-up outside the measured join time (ASSIGN's ms): bootstrap connection, metadata
            // and the JVM's class loading of the network client are the client's own start-up cost.
            consumer.partitionsFor(topic, Duration.ofSeconds(30));
            t0[0] = System.nanoTime();
            consumer.subscribe(List.of(topic), listener);
            while (!stop.get()) {
                ConsumerRecords<String, String> records;
                try {
                    records = consumer.poll(Duration.ofMillis(200));
                } catch (WakeupException e) {
                    break;
                }
                ConsumerGroupMetadata gm = consumer.groupMetadata();
                String gen = gm.generationId() + "\t" + gm.memberId();
                if (!gen.equals(lastGen)) {
                    emit("GEN", gen);
                    lastGen = gen;
                }
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                for (ConsumerRecord<String, String> r : records) {
                    emit("GOT", r.partition(), r.offset(), r.key(), r.value());
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                if (!next.isEmpty()) {
                    try {
                        consumer.commitSync(next, Duration.ofSeconds(30));
                        for (Map.Entry<TopicPartition, OffsetAndMetadata> e : next.entrySet()) {
                            emit("COMMIT", e.getKey().partition(), e.getValue().offset());
                        }
                    } catch (WakeupException e) {
                        break;
                    } catch (Exception e) {
                        emit("CERR", e.toString().replace('\t', ' ').replace('\n', ' '));
                    }
                }
            }
        } catch (Exception e) {
            emit("ERROR", e.toString().replace('\t', ' ').replace('\n', ' '));
        } finally {
            consumer.close(Duration.ofSeconds(10));
            emit("CLOSED");
        }
        System.exit(0);
    }
}
