# The consumer examples of kafka-python's README (https://github.com/dpkp/kafka-python#kafkaconsumer)
# against $BOOTSTRAP, reading what producer.py wrote. Each consumer stops after 5 s without a new
# message (consumer_timeout_ms, as in the README) and reads from the start (auto_offset_reset='earliest').
import json
import os
from collections import Counter

from kafka import KafkaConsumer, TopicPartition

BOOTSTRAP = os.environ['BOOTSTRAP']
common = dict(bootstrap_servers=BOOTSTRAP, auto_offset_reset='earliest', consumer_timeout_ms=5000)

# join a consumer group for dynamic partition assignment and offset commits
consumer = KafkaConsumer('foobar', group_id='my_favorite_group', **common)
values = Counter()
keyed = []
for msg in consumer:
    values[b'msg' if msg.value.startswith(b'msg ') else msg.value] += 1
    if msg.key is not None:
        keyed.append((msg.key, msg.value))
consumer.close()
print(f'foobar: {values[b"some_message_bytes"]} some_message_bytes, {values[b"another_message"]} another_message, '
      f'{values[b"msg"]} gzip msg, keyed {keyed}')

# manually assign the partition list for the consumer
consumer = KafkaConsumer(**common)
consumer.assign([TopicPartition('flipflap', 0)])
msg = next(consumer)
print(f'flipflap: key={msg.key} value={msg.value}')
consumer.close()

# Deserialize json messages
consumer = KafkaConsumer(value_deserializer=lambda m: json.loads(m.decode('utf-8')), **common)
consumer.subscribe(['fizzbuzz'])
print('fizzbuzz:', [msg.value for msg in consumer])
consumer.close()

# Subscribe to a regex topic pattern
consumer = KafkaConsumer(group_id='pattern_group', **common)
consumer.subscribe(pattern='^f.*z$')
print('pattern ^f.*z$:', sorted(Counter(msg.topic for msg in consumer).items()))
consumer.close()

# Read the group's committed offsets again: the first group is done with foobar
consumer = KafkaConsumer('foobar', group_id='my_favorite_group', **common)
print('foobar again in my_favorite_group:', sum(1 for _ in consumer), 'messages')
consumer.close()
