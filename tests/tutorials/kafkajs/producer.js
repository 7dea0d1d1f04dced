// KafkaJS "Getting Started" (https://kafka.js.org/docs/getting-started) producer, with keys as in
// https://kafka.js.org/docs/producing#message-key. The broker address comes from $BOOTSTRAP.
//   node producer.js BATCH COUNT   sends COUNT records, keys user-0..user-11, values BATCH-0..BATCH-(COUNT-1)
const { Kafka } = require('kafkajs')

const [batch, count] = [process.argv[2] || 'hello', Number(process.argv[3] || 10)]
const kafka = new Kafka({
  clientId: 'my-app',
  brokers: [process.env.BOOTSTRAP],
})

const producer = kafka.producer()

const run = async () => {
  await producer.connect()
  const messages = []
  for (let i = 0; i < count; i++) messages.push({ key: `user-${i % 12}`, value: `${batch}-${i}` })
  const metadata = await producer.send({ topic: 'test-topic', messages })
  for (const m of metadata) console.log(`sent to partition ${m.partition}, base offset ${m.baseOffset}`)
  await producer.disconnect()
}

run().catch(e => {
  console.error(e)
  process.exit(1)
})
