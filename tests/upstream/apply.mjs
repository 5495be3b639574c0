// Apply StreamEvents (event-format.md, one JSON object per line) with the genuine @atproto/bsky
// 0.0.280 IndexingService, one event at a time, in order, the way its firehose subscription
// (dist/data-plane/server/subscription.js) does:
//
//   node apply.mjs postgresql://postgres@127.0.0.1:5432/some_db schema events.jsonl [schema2 ...]
//
// Each (pg schema, file) pair is applied on its own, in turn (one node start for many sequences):
// the package's own migrations build the AppView schema in that pg schema (as upstream's tests
// do; pg_trgm must already exist in public), then the events go in.
// create/update -> indexRecord(uri, cid, record, action, time), delete -> deleteRecord(uri), both
// followed by setCommitLastSeen(did, commit, rev); account -> the Firehose's parseAccount, then
// deleteActor or updateActorStatus; identity -> indexHandle(did, time, force=true). The
// subscription's unforced indexHandle after every commit is left out: it resolves DIDs over the
// network, and we do not resolve DIDs (docs/semantics.md). `repo` events have no upstream
// counterpart here and are skipped. Every background task (counter recounts) is drained before
// the next event, so the tables depend only on the order of the events.
//
// Nothing goes to the network. The IdResolver gets a `fetch` that answers from an in-memory PLC
// directory built from the identity events seen so far (a DID's document names the handle of its
// last identity event), and handles resolve from the same directory instead of DNS/HTTPS: a handle
// resolves to the last DID that claimed it, if it is syntactically valid. A `deleted` account's
// DID is forgotten before deleteActor runs, so upstream's hosting check finds no PDS, as for a
// tombstoned DID.
//
// Prints one JSON line per pair: {"schema", "events", "applied", "skipped": [{"line", "uri", "error"}]},
// where skipped lists what upstream refused (invalid records, plugin errors, unknown account
// statuses).
import { register } from 'node:module'

// The package loads undici 7 and 8 Agents at import time; on node 20 (bundled undici 6) only the
// v6 one is ever used, and undici 8 does not even load there. Stand-ins that refuse to be built.
register(
  'data:text/javascript,' +
    encodeURIComponent(`
      const STUB = 'data:text/javascript,' + encodeURIComponent(
        'export class Agent { constructor() { throw new Error("undici >= 7 needs node >= 22") } }')
      export async function resolve(specifier, context, next) {
        if (specifier === 'undici_v7' || specifier === 'undici_v8') {
          return { url: STUB, shortCircuit: true }
        }
        return next(specifier, context)
      }`),
)

const pkg = new URL('./node_modules/@atproto/bsky/dist/', import.meta.url)
const { Database } = await import(new URL('data-plane/server/db/db.js', pkg).href)
const { BackgroundQueue } = await import(new URL('data-plane/server/background.js', pkg).href)
const { IndexingService } = await import(
  new URL('data-plane/server/indexing/index.js', pkg).href
)
const { IdResolver } = await import('@atproto/identity')
const { Secp256k1Keypair } = await import('@atproto/crypto')
const { lexParse, parseCid } = await import('@atproto/lex')
const { WriteOpAction } = await import('@atproto/repo')
const { parseAccount } = await import('@atproto/sync')
const { AtUri, isValidHandle } = await import('@atproto/syntax')
const { readFile } = await import('node:fs/promises')

const [url, ...pairs] = process.argv.slice(2)
if (!url || pairs.length === 0 || pairs.length % 2 !== 0) {
  console.error('usage: node apply.mjs <postgres url> <schema> <events.jsonl> [<schema> <file> ...]')
  process.exit(2)
}

const signingKey = (await Secp256k1Keypair.create()).did().slice('did:key:'.length)

// The in-memory directory that stands in for PLC, DNS and handle HTTPS; one per sequence.
const makeIdResolver = () => {
  const handleOf = new Map() // did -> handle named by its DID document
  const didOfHandle = new Map() // lower-cased handle -> last DID that claimed it
  const didDocument = (did, handle) => ({
    '@context': ['https://www.w3.org/ns/did/v1'],
    id: did,
    alsoKnownAs: [`at://${handle}`],
    verificationMethod: [
      { id: `${did}#atproto`, type: 'Multikey', controller: did, publicKeyMultibase: signingKey },
    ],
    service: [
      {
        id: '#atproto_pds',
        type: 'AtprotoPersonalDataServer',
        serviceEndpoint: 'https://pds.invalid',
      },
    ],
  })
  const directoryFetch = async (input) => {
    const did = decodeURIComponent(new URL(String(input)).pathname.slice(1))
    const handle = handleOf.get(did)
    if (handle === undefined) return new Response(null, { status: 404 })
    return Response.json(didDocument(did, handle))
  }
  const idResolver = new IdResolver({ plcUrl: 'https://plc.invalid', fetch: directoryFetch })
  // HandleResolver asks DNS before its fetch; answer from the directory instead.
  idResolver.handle = {
    resolve: async (handle) =>
      isValidHandle(handle) ? didOfHandle.get(handle.toLowerCase()) : undefined,
  }
  const claim = (did, handle) => {
    handleOf.set(did, handle)
    didOfHandle.set(handle.toLowerCase(), did)
  }
  const forget = (did) => handleOf.delete(did)
  return { idResolver, claim, forget }
}

// The relay's event time (what upstream stores verbatim) is ISO 8601 in UTC with milliseconds.
const relayTime = (time) => new Date(time).toISOString()

const apply = async (indexing, directory, evt) => {
  const time = relayTime(evt.time)
  switch (evt.type) {
    case 'create':
    case 'update':
    case 'delete': {
      const uri = AtUri.make(evt.did, evt.collection, evt.rkey)
      try {
        if (evt.type === 'delete') {
          await indexing.deleteRecord(uri)
        } else {
          const action = evt.type === 'create' ? WriteOpAction.Create : WriteOpAction.Update
          const record = lexParse(JSON.stringify(evt.record))
          await indexing.indexRecord(uri, parseCid(evt.cid), record, action, time)
        }
      } finally {
        // Runs alongside indexRecord upstream, so it lands even when the record is refused.
        await indexing.setCommitLastSeen(evt.did, parseCid(evt.commit), evt.rev)
      }
      return
    }
    case 'account': {
      // Producers may capitalise the status; the relay sends the lexicon's lower-case tokens.
      const status = typeof evt.status === 'string' ? evt.status.toLowerCase() : undefined
      const parsed = parseAccount({ seq: evt.seq, time, did: evt.did, active: evt.active, status })
      if (!parsed) throw new Error(`account status dropped by the Firehose: ${evt.status}`)
      if (parsed.active === false && parsed.status === 'deleted') {
        directory.forget(evt.did)
        await indexing.deleteActor(evt.did)
      } else {
        await indexing.updateActorStatus(evt.did, parsed.active, parsed.status)
      }
      return
    }
    case 'identity': {
      if (typeof evt.handle === 'string') directory.claim(evt.did, evt.handle)
      await indexing.indexHandle(evt.did, time, true)
      return
    }
    default:
      throw new Error(`not applied: ${evt.type} event`)
  }
}

const applyFile = async (schema, eventsPath) => {
  const lines = (await readFile(eventsPath, 'utf8')).split('\n').filter((l) => l.trim() !== '')
  const directory = makeIdResolver()
  const db = new Database({ url, schema, poolSize: 4 })
  await db.migrateToLatestOrThrow()
  const background = new BackgroundQueue(db, { concurrency: Number.POSITIVE_INFINITY })
  const indexing = new IndexingService(db, directory.idResolver, background)
  const skipped = []
  try {
    for (const [n, line] of lines.entries()) {
      const evt = JSON.parse(line)
      try {
        await apply(indexing, directory, evt)
      } catch (err) {
        // The subscription logs these and moves on; so do we, and say so.
        const uri = evt.collection ? `at://${evt.did}/${evt.collection}/${evt.rkey}` : evt.did
        skipped.push({ line: n + 1, uri, error: String(err?.message ?? err).slice(0, 300) })
      }
      await background.processAll()
    }
  } finally {
    await background.destroy()
    await db.close()
  }
  return { events: lines.length, applied: lines.length - skipped.length, skipped }
}

let exitCode = 0
try {
  for (let i = 0; i < pairs.length; i += 2) {
    console.log(JSON.stringify({ schema: pairs[i], ...(await applyFile(pairs[i], pairs[i + 1])) }))
  }
} catch (err) {
  console.error('apply failed:', err)
  exitCode = 1
}
process.exit(exitCode)
