#!/usr/bin/env node
// KafkaJS 2.2.4 round trip for the Spool e2e suite (driven by tests/e2e/test_kafkajs.py).
//
// usage: node client_check.js BOOTSTRAP TOPIC CODEC < messages
//   stdin: one message per line, tab-separated: key, value, header name, header value, ...
//   stdout (tab-separated lines, parsed by e2e_lib.parse_line_protocol):
//     PARTITIONS n | SENT idx partition offset | GOT partition offset key value [hname hvalue]...
//     END partition high-watermark | CODEC compress|decompress calls
//   exit 3 with "UNAVAILABLE\tcodec\treason" when a codec package cannot be loaded.
'use strict'

const {
  Kafka, logLevel, CompressionTypes, CompressionCodecs, Partitioners,
} = require('kafkajs')
const Batch = require('kafkajs/src/consumer/batch')
const Long = require('kafkajs/src/utils/long')

const [bootstrap, topic, codec] = process.argv.slice(2)
const NUM_PARTITIONS = 3
const READ_COMMITTED = 1 // KafkaJS's consumer default isolation level
const out = lines => process.stdout.write(lines.map(f => f.join('\t')).join('\n') + (lines.length ? '\n' : ''))

// --- codecs: only gzip is built in; the others come from npm packages (pure JS / wasm) ---
const calls = { compress: 0, decompress: 0 }

function loadCodec(name) {
  switch (name) {
    case 'gzip':
      return CompressionCodecs[CompressionTypes.GZIP]
    case 'snappy':
      return require('kafkajs-snappy')
    case 'lz4': {
      // lz4js writes and reads standard LZ4 frames, the format Kafka uses for record batch v2.
      const lz4 = require('lz4js')
      return () => ({
        async compress(encoder) { return Buffer.from(lz4.compress(encoder.buffer)) },
        async decompress(buffer) { return Buffer.from(lz4.decompress(buffer)) },
      })
    }
    case 'zstd': {
      // zstd-wasm compresses; fzstd (pure JS) decompresses any frame, also ones without a content size.
      const zstd = require('@bokuweb/zstd-wasm')
      const fzstd = require('fzstd')
      const ready = zstd.init()
      return () => ({
        async compress(encoder) { await ready; return Buffer.from(zstd.compress(encoder.buffer, 3)) },
        async decompress(buffer) { return Buffer.from(fzstd.decompress(buffer)) },
      })
    }
    default:
      throw new Error(`unknown codec ${name}`)
  }
}

const typeOf = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD }

if (codec !== 'none') {
  let factory
  try {
    factory = loadCodec(codec)
  } catch (e) {
    out([['UNAVAILABLE', codec, String(e.message).split('\n')[0]]])
    process.exit(3)
  }
  // Count calls: proves batches were compressed on produce and came back compressed on fetch.
  CompressionCodecs[typeOf[codec]] = () => {
    const c = factory()
    return {
      async compress(encoder) { calls.compress++; return c.compress(encoder) },
      async decompress(buffer) { calls.decompress++; return c.decompress(buffer) },
    }
  }
}

function readInput() {
  return require('fs').readFileSync(0, 'utf8').split('\n').filter(Boolean).map(line => {
    const [key, value, ...h] = line.split('\t')
    const headers = {}
    for (let i = 0; i < h.length; i += 2) headers[h[i]] = h[i + 1]
    return { key, value, headers }
  })
}

const str = b => (b == null ? '' : b.toString('utf8'))

async function main() {
  const kafka = new Kafka({
    clientId: 'spool-e2e-kafkajs',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    // stdout carries the report: send KafkaJS's own log lines to stderr.
    logCreator: () => ({ namespace, level, label, log }) =>
      process.stderr.write(`${label} [${namespace}] ${JSON.stringify(log)}\n`),
  })
  const messages = readInput()

  const admin = kafka.admin()
  await admin.connect()
  try {
    await admin.createTopics({
      topics: [{ topic, numPartitions: NUM_PARTITIONS, replicationFactor: 1 }], waitForLeaders: true,
    })
    const md = await admin.fetchTopicMetadata({ topics: [topic] })
    out([['PARTITIONS', md.topics[0].partitions.length]])
  } finally {
    await admin.disconnect()
  }

  // The real default (murmur2) partitioner, wrapped to learn where each message went.
  const chosen = new Map()
  const producer = kafka.producer({
    idempotent: true, // exercises InitProducerId; KafkaJS requires maxInFlightRequests 1 with it
    maxInFlightRequests: 1,
    createPartitioner: () => {
      const inner = Partitioners.DefaultPartitioner()
      return args => {
        const p = inner(args)
        chosen.set(args.message.value, p)
        return p
      }
    },
  })
  await producer.connect()
  try {
    // One send = one produce request with one batch per partition, in input order.
    const res = await producer.send({ topic, acks: -1, compression: typeOf[codec], messages })
    const base = new Map(res.map(r => [r.partition, Long.fromValue(r.baseOffset)]))
    const rank = new Map()
    out(messages.map((m, idx) => {
      const p = chosen.get(m.value)
      const k = rank.get(p) || 0
      rank.set(p, k + 1)
      return ['SENT', idx, p, base.get(p).add(k).toString()]
    }))
  } finally {
    await producer.disconnect()
  }

  // KafkaJS has no assign(): its consumer always joins a group, and Spool has no groups yet.
  // So drive the consumer's own fetch path (cluster -> broker.fetch -> Batch) directly, from offset 0.
  const createCluster = Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  if (!createCluster) throw new Error('KafkaJS internals changed: no private createCluster')
  const cluster = kafka[createCluster]({ allowAutoTopicCreation: false, isolationLevel: READ_COMMITTED })
  await cluster.connect()
  try {
    await cluster.addTargetTopic(topic)
    const leaders = cluster.findLeaderForPartitions(topic, [...Array(NUM_PARTITIONS).keys()])
    const deadline = Date.now() + 60000
    for (const [nodeId, partitions] of Object.entries(leaders)) {
      const broker = await cluster.findBroker({ nodeId })
      for (const partition of partitions) {
        let offset = Long.fromValue(0)
        for (;;) {
          if (Date.now() > deadline) throw new Error(`fetch of partition ${partition} timed out`)
          const { responses } = await broker.fetch({
            maxWaitTime: 100, minBytes: 1, maxBytes: 10485760, isolationLevel: READ_COMMITTED,
            topics: [{ topic, partitions: [{ partition, fetchOffset: offset.toString(), maxBytes: 1048576 }] }],
          })
          const data = responses[0].partitions[0]
          if (data.errorCode) throw new Error(`fetch ${topic}/${partition} error ${data.errorCode}`)
          const batch = new Batch(topic, offset.toString(), data)
          out(batch.messages.map(m => ['GOT', partition, m.offset, str(m.key), str(m.value),
            ...Object.entries(m.headers || {}).flatMap(([k, v]) => [k, str(v)])]))
          if (!batch.isEmptyIncludingFiltered()) offset = Long.fromValue(batch.lastOffset()).add(1)
          if (offset.greaterThanOrEqual(Long.fromValue(data.highWatermark))) break
        }
      }
    }
  } finally {
    await cluster.disconnect()
  }

  const admin2 = kafka.admin()
  await admin2.connect()
  try {
    const offsets = await admin2.fetchTopicOffsets(topic) // ListOffsets, latest
    out(offsets.map(o => ['END', o.partition, o.high]))
  } finally {
    await admin2.disconnect()
  }
  out([['CODEC', 'compress', calls.compress], ['CODEC', 'decompress', calls.decompress]])
}

const timer = setTimeout(() => { console.error('client_check.js: timed out'); process.exit(2) }, 150000)
main().then(() => { clearTimeout(timer) }, e => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(1)
})
