// Java kafka-clients 4.3.0 round trip for the Spool e2e suite (driven by tests/e2e/test_java.py).
//
// usage: java ClientCheck BOOTSTRAP TOPIC CODEC < messages
//   stdin: one message per line, tab-separated: key, value, header name, header value, ...
//   stdout (tab-separated lines, parsed by e2e_lib.parse_line_protocol):
//     PARTITIONS n | SENT idx partition offset | GOT partition offset key value [hname hvalue]...
//     END partition high-watermark

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class ClientCheck {
    static final int NUM_PARTITIONS = 3;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1], codec = args[2];
        List<String[]> input = new ArrayList<>();
        try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            for (String line; (line = in.readLine()) != null; ) {
                if (!line.isEmpty()) input.add(line.split("\t", -1));
            }
        }

        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);
        common.put("client.id", "spool-e2e-java");
        common.put("request.timeout.ms", "30000");

        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, NUM_PARTITIONS, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }

        Properties pp = new Properties();
        pp.putAll(common);
        pp.put("enable.idempotence", "true"); // the 4.x default, made explicit: InitProducerId first
        pp.put("acks", "all");
        pp.put("compression.type", codec);
        pp.put("linger.ms", "20");
        pp.put("delivery.timeout.ms", "60000");
        StringBuilder out = new StringBuilder();
        try (KafkaProducer<String, String> producer =
                     new KafkaProducer<>(pp, new StringSerializer(), new StringSerializer())) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (String[] f : input) {
                RecordHeaders headers = new RecordHeaders();
                for (int i = 2; i + 1 < f.length; i += 2) headers.add(f[i], f[i + 1].getBytes(StandardCharsets.UTF_8));
                acks.add(producer.send(new ProducerRecord<>(topic, null, f[0], f[1], headers)));
            }
            producer.flush();
            for (int i = 0; i < acks.size(); i++) {
                RecordMetadata md = acks.get(i).get(60, TimeUnit.SECONDS);
                out.append("SENT\t").append(i).append('\t').append(md.partition()).append('\t').append(md.offset()).append('\n');
            }
        }

        Properties cp = new Properties();
        cp.putAll(common);
        // No group.id: consumer groups are not implemented, so assign + seek explicitly.
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "earliest");
        try (KafkaConsumer<String, String> consumer =
                     new KafkaConsumer<>(cp, new StringDeserializer(), new StringDeserializer())) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
            out.append("PARTITIONS\t").append(infos.size()).append('\n');
            List<TopicPartition> tps = new ArrayList<>();
            for (PartitionInfo pi : infos) tps.add(new TopicPartition(topic, pi.partition()));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            int got = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (got < input.size() && System.currentTimeMillis() < deadline) {
                got += print(consumer.poll(Duration.ofMillis(500)), out);
            }
            print(consumer.poll(Duration.ofMillis(300)), out); // extra (duplicate) records would show up here
            for (Map.Entry<TopicPartition, Long> e : consumer.endOffsets(tps, Duration.ofSeconds(30)).entrySet()) {
                out.append("END\t").append(e.getKey().partition()).append('\t').append(e.getValue()).append('\n');
            }
        }
        System.out.print(out);
        System.out.flush();
    }

    static int print(Iterable<ConsumerRecord<String, String>> records, StringBuilder out) {
        int n = 0;
        for (ConsumerRecord<String, String> r : records) {
            out.append("GOT\t").append(r.partition()).append('\t').append(r.offset()).append('\t')
               .append(r.key()).append('\t').append(r.value());
            for (Header h : r.headers()) {
                out.append('\t').append(h.key()).append('\t').append(new String(h.value(), StandardCharsets.UTF_8));
            }
            out.append('\n');
            n++;
        }
        return n;
    }
}
