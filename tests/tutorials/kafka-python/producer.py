# The producer examples of kafka-python's README (https://github.com/dpkp/kafka-python#kafkaproducer),
# run one after the other against $BOOTSTRAP, printing what each one got back.
import json
import os

from kafka import KafkaProducer

BOOTSTRAP = os.environ['BOOTSTRAP']

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
for _ in range(100):
    producer.send('foobar', b'some_message_bytes')

# Block until a single message is sent (or timeout)
future = producer.send('foobar', b'another_message')
result = future.get(timeout=60)
print(f'another_message: topic={result.topic} partition={result.partition} offset={result.offset}')

# Block until all pending messages are at least put on the network
producer.flush()

# Use a key for hashed-partitioning
producer.send('foobar', key=b'foo', value=b'bar')
producer.flush()

# Serialize json messages
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, value_serializer=lambda v: json.dumps(v).encode('utf-8'))
producer.send('fizzbuzz', {'foo': 'bar'})
producer.flush()

# Serialize string keys
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, key_serializer=str.encode)
producer.send('flipflap', key='ping', value=b'1234')
producer.flush()

# Compress messages
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, compression_type='gzip')
for i in range(1000):
    producer.send('foobar', b'msg %d' % i)
producer.flush()
print('producer done')
