// KafkaJS "Getting Started" (https://kafka.js.org/docs/getting-started) consumer in the group
// test-group, with the graceful shutdown of KafkaJS's examples/consumer.js (disconnect on SIGTERM/SIGINT,
// which leaves the group) and the GROUP_JOIN instrumentation event (https://kafka.js.org/docs/instrumentation-events)
// to show the partitions it was given. The broker address comes from $BOOTSTRAP.
//   node consumer.js NAME    (NAME is the clientId, shown by kafka-consumer-groups.sh --members)
const { Kafka } = require('kafkajs')

const name = process.argv[2] || 'my-app'
const kafka = new Kafka({
  clientId: name,
  brokers: [process.env.BOOTSTRAP],
})

const consumer = kafka.consumer({ groupId: 'test-group' })

const run = async () => {
  await consumer.connect()
  await consumer.subscribe({ topics: ['test-topic'], fromBeginning: true })

  await consumer.run({
    eachMessage: async ({ topic, partition, message }) => {
      console.log(`${name} got partition=${partition} offset=${message.offset} key=${message.key} value=${message.value.toString()}`)
    },
  })
}

consumer.on(consumer.events.GROUP_JOIN, e => {
  console.log(`${name} assigned ${JSON.stringify(e.payload.memberAssignment)}`)
})

run().catch(e => {
  console.error(e)
  process.exit(1)
})

const signalTraps = ['SIGTERM', 'SIGINT', 'SIGUSR2']
signalTraps.forEach(type => {
  process.once(type, async () => {
    try {
      await consumer.disconnect()
      console.log(`${name} disconnected`)
    } finally {
      process.exit(0)
    }
  })
})
