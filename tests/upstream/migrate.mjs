// Build the genuine @atproto/bsky AppView schema in a database by running its Kysely migrations.
//
//   node migrate.mjs postgresql://postgres@127.0.0.1:5432/some_db [pg_schema]
//
// db.js is imported by file path: the package root cannot be loaded on node 20 (it pulls in
// undici v8, which needs zlib.createZstdDecompress from node >= 22).
const dbModule = new URL(
  './node_modules/@atproto/bsky/dist/data-plane/server/db/db.js',
  import.meta.url,
)
const { Database } = await import(dbModule.href)

const [url, schema] = process.argv.slice(2)
if (!url) {
  console.error('usage: node migrate.mjs <postgres url> [pg schema]')
  process.exit(2)
}

const db = new Database({ url, schema })
let exitCode = 0
try {
  const results = await db.migrateToLatestOrThrow()
  for (const r of results) console.log(`${r.status} ${r.migrationName}`)
  console.log(`migrated: ${results.length} migrations`)
} catch (err) {
  console.error('migration failed:', err)
  exitCode = 1
} finally {
  await db.close()
}
process.exit(exitCode)
