#!/usr/bin/env node
// KafkaJS 2.2.4 consumer-group member for the Spool e2e suite (driven by tests/e2e/test_groups_*.py
// through groups_lib.Worker). consumer.subscribe + consumer.run({eachMessage}), committing each
// message's offset explicitly (autoCommit off) so "COMMIT" lines mean "acknowledged by the broker".
//
// usage: node group_consumer.js BOOTSTRAP TOPIC GROUP NAME [SESSION_TIMEOUT_MS [HEARTBEAT_MS]]
//   stdin: "CLOSE" (or EOF) -> consumer.disconnect() (LeaveGroup) and exit 0
//   stdout (tab-separated): ASSIGN ms added now | GOT p offset key value | COMMIT p next | CERR text |
//                           ERROR text | CLOSED
//   KAFKAJS_DEBUG=1 in the environment logs KafkaJS at DEBUG level (with request/response dumps) to stderr.
'use strict'

const { Kafka, logLevel, PartitionAssigners } = require('kafkajs')

const [bootstrap, topic, groupId, name, sessionArg, heartbeatArg] = process.argv.slice(2)
const sessionTimeout = Number(sessionArg || 6000)
const heartbeatInterval = Number(heartbeatArg || 1000)
const emit = (...f) => process.stdout.write(f.join('\t') + '\n')
const str = b => (b == null ? '' : b.toString('utf8'))

// KafkaJS's round robin assigner calls its protocol "RoundRobinAssigner"; Java, librdkafka and
// kafka-python call theirs "roundrobin". The subscription and assignment encodings are the
// standard ConsumerProtocol ones, so the same assigner under the common name can join a mixed group.
const roundrobin = config => ({ ...PartitionAssigners.roundRobin(config), name: 'roundrobin' })

async function main() {
  const kafka = new Kafka({
    clientId: name,
    brokers: [bootstrap],
    logLevel: process.env.KAFKAJS_DEBUG ? logLevel.DEBUG : logLevel.WARN,
    logCreator: () => ({ namespace, level, label, log }) =>
      process.stderr.write(`${new Date().toISOString()} ${label} [${namespace}] ${JSON.stringify(log)}\n`),
  })
  const consumer = kafka.consumer({
    groupId,
    sessionTimeout,
    heartbeatInterval,
    rebalanceTimeout: 30000,
    maxWaitTimeInMs: 200,
    partitionAssigners: [roundrobin],
    retry: { retries: 10 },
  })
  let owned = new Set()
  let t0 = 0
  const csv = s => [...s].sort((a, b) => a - b).join(',')
  consumer.on(consumer.events.GROUP_JOIN, e => {
    const now = new Set(e.payload.memberAssignment[topic] || [])
    const added = [...now].filter(p => !owned.has(p))
    owned = now
    emit('ASSIGN', Date.now() - t0, csv(added), csv(now))
  })
  consumer.on(consumer.events.CRASH, e => emit('ERROR', `crash ${e.payload.error && e.payload.error.message}`))

  let closing = false
  const close = async code => {
    if (closing) return
    closing = true
    try {
      await consumer.disconnect()
    } finally {
      emit('CLOSED')
      process.exit(code)
    }
  }
  let buf = ''
  process.stdin.on('data', d => {
    buf += d
    if (buf.split('\n').some(l => l.trim() === 'CLOSE')) close(0)
  })
  process.stdin.on('end', () => close(0))

  await consumer.connect()
  t0 = Date.now()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      emit('GOT', partition, message.offset, str(message.key), str(message.value))
      const next = (BigInt(message.offset) + 1n).toString()
      try {
        await consumer.commitOffsets([{ topic, partition, offset: next }])
        emit('COMMIT', partition, next)
      } catch (e) {
        emit('CERR', e.message)
      }
    },
  })
}

const timer = setTimeout(() => { emit('ERROR', 'group_consumer.js: 170 s limit'); process.exit(2) }, 170000)
timer.unref()
main().catch(e => {
  console.error(e && e.stack ? e.stack : e)
  emit('ERROR', String(e && e.message))
  process.exit(1)
})
