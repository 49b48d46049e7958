import { test } from 'node:test'
import assert from 'node:assert/strict'
import { useDatabase, uniqueName, syncShape, rawGet } from './helpers.mjs'

const db = useDatabase()

// Each column: its SQL type, the electric-schema entry the client parses by,
// and two (input, expected JS value) cases. Expected strings are Postgres
// text output under Electric's display settings (DateStyle 'ISO, DMY',
// TimeZone UTC, IntervalStyle iso_8601, bytea_output hex,
// extra_float_digits 1), which the server must apply both to snapshot
// queries and to the replication connection that decodes live rows.
const COLUMNS = {
  c_int2: { sql: 'int2', schema: { type: 'int2' }, a: ['32767', 32767], b: ['-32768', -32768] },
  c_int4: { sql: 'int4', schema: { type: 'int4' }, a: ['2147483647', 2147483647], b: ['0', 0] },
  c_int8: {
    sql: 'int8',
    schema: { type: 'int8' },
    // Beyond 2^53: only exact as a BigInt.
    a: ['9007199254740993', 9007199254740993n],
    b: ['-9223372036854775808', -9223372036854775808n],
  },
  c_numeric: { sql: 'numeric', schema: { type: 'numeric' }, a: ['12345.6789', '12345.6789'], b: ['-0.0010', '-0.0010'] },
  c_float8: { sql: 'float8', schema: { type: 'float8' }, a: ['3.25', 3.25], b: ['-1.25e-5', -1.25e-5] },
  c_text: {
    sql: 'text',
    schema: { type: 'text' },
    a: ['line1\nline2\t"quoted" back\\slash / ünï ✓ 😀', 'line1\nline2\t"quoted" back\\slash / ünï ✓ 😀'],
    b: ['', ''],
  },
  c_varchar: {
    sql: 'varchar(20)',
    schema: { type: 'varchar', max_length: 20 },
    a: ['short', 'short'],
    b: ['exactly twenty chars', 'exactly twenty chars'],
  },
  // Snapshots render booleans as true/false, pgoutput as t/f; both must parse.
  c_bool: { sql: 'bool', schema: { type: 'bool' }, a: ['true', true], b: ['false', false] },
  c_uuid: {
    sql: 'uuid',
    schema: { type: 'uuid' },
    a: ['A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
    b: ['00000000-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000000'],
  },
  c_date: { sql: 'date', schema: { type: 'date' }, a: ['2024-01-02', '2024-01-02'], b: ['1999-12-31', '1999-12-31'] },
  c_timestamp: {
    sql: 'timestamp',
    schema: { type: 'timestamp' },
    a: ['2024-01-02 03:04:05.123456', '2024-01-02 03:04:05.123456'],
    b: ['1999-12-31 23:59:59', '1999-12-31 23:59:59'],
  },
  c_timestamptz: {
    sql: 'timestamptz',
    schema: { type: 'timestamptz' },
    a: ['2024-01-02 05:04:05+02', '2024-01-02 03:04:05+00'],
    b: ['2000-01-01 00:00:00-05', '2000-01-01 05:00:00+00'],
  },
  c_interval: {
    sql: 'interval',
    schema: { type: 'interval' },
    a: ['1 day 2 hours', 'P1DT2H'],
    b: ['1 year 2 months 3 days 04:05:06.5', 'P1Y2M3DT4H5M6.5S'],
  },
  c_jsonb: {
    sql: 'jsonb',
    schema: { type: 'jsonb' },
    a: ['{"b": [1, 2.5, {"c": null}], "a": "x"}', { a: 'x', b: [1, 2.5, { c: null }] }],
    b: ['[]', []],
  },
  c_json: {
    sql: 'json',
    schema: { type: 'json' },
    a: ['{"z": 1, "a": [true, "s"]}', { z: 1, a: [true, 's'] }],
    b: ['"just a string"', 'just a string'],
  },
  c_bytea: { sql: 'bytea', schema: { type: 'bytea' }, a: ['\\x0102ff', '\\x0102ff'], b: ['\\x', '\\x'] },
  c_int4_arr: {
    sql: 'int4[]',
    schema: { type: 'int4', dims: 1 },
    a: ['{1,2,NULL,-3}', [1, 2, null, -3]],
    b: ['{}', []],
  },
  c_text_arr: {
    sql: 'text[]',
    schema: { type: 'text', dims: 1 },
    a: [
      '{plain,"with space","comma,inside","quote\\"inside",NULL,"back\\\\slash","NULL"}',
      ['plain', 'with space', 'comma,inside', 'quote"inside', null, 'back\\slash', 'NULL'],
    ],
    b: ['{"",NULL}', ['', null]],
  },
  // The enum type is created per table; its schema type is its own name.
  c_enum: { sql: null, schema: null, a: ['happy', 'happy'], b: ['sad', 'sad'] },
}
const NAMES = Object.keys(COLUMNS)

/** Creates the all-types table; returns the electric-schema entry expected per column. */
async function createTypesTable(table) {
  const enumType = `${table}_mood`
  await db.query(`CREATE TYPE ${enumType} AS ENUM ('sad', 'ok', 'happy')`)
  const sqlType = (name) => (name === 'c_enum' ? enumType : COLUMNS[name].sql)
  await db.query(`CREATE TABLE ${table} (id int4 PRIMARY KEY, ${NAMES.map((name) => `${name} ${sqlType(name)}`).join(', ')})`)
  return Object.fromEntries(NAMES.map((name) => [name, name === 'c_enum' ? { type: enumType } : COLUMNS[name].schema]))
}

function expectedRow(id, set) {
  const row = { id }
  for (const name of NAMES) row[name] = set === null ? null : COLUMNS[name][set][1]
  return row
}

async function insertRow(table, id, set) {
  const values = NAMES.map((name) => (set === null ? null : COLUMNS[name][set][0]))
  const placeholders = NAMES.map((_, i) => `$${i + 2}`).join(', ')
  await db.query(`INSERT INTO ${table} (id, ${NAMES.join(', ')}) VALUES ($1, ${placeholders})`, [id, ...values])
}

test('the default parser yields the same JS values from snapshot and live rows', { timeout: 120_000 }, async (t) => {
  const table = uniqueName('types')
  await createTypesTable(table)
  // Set a, set b and all-NULLs, first in the snapshot...
  await insertRow(table, 1, 'a')
  await insertRow(table, 2, 'b')
  await insertRow(table, 3, null)

  const sync = syncShape(t, { table })
  const snapshot = await sync.initialRows()
  assert.deepStrictEqual(snapshot.map((row) => ({ ...row })), [expectedRow(1, 'a'), expectedRow(2, 'b'), expectedRow(3, null)])

  // ...then the same values again, this time decoded from replication.
  await insertRow(table, 11, 'a')
  await insertRow(table, 12, 'b')
  await insertRow(table, 13, null)
  await sync.until('the three live rows', () => sync.rows().length === 6)
  const liveRows = new Map(sync.rows().map((row) => [row.id, { ...row }]))
  for (const [live, set] of [[11, 'a'], [12, 'b'], [13, null]]) {
    assert.deepStrictEqual(liveRows.get(live), expectedRow(live, set), `live row ${live} parses like snapshot row`)
  }
})

test('electric-schema describes each column as the client expects', { timeout: 60_000 }, async () => {
  const table = uniqueName('schema')
  const expectedSchema = await createTypesTable(table)

  const response = await rawGet({ table, offset: '-1' })
  assert.equal(response.status, 200, `${response.url} → ${response.status} ${response.text}`)
  const header = response.headers.get('electric-schema')
  assert.ok(header, 'a non-live 200 carries electric-schema')
  const schema = JSON.parse(header)

  assert.deepStrictEqual(Object.keys(schema).sort(), ['id', ...NAMES].sort(), 'one entry per selected column')
  assert.equal(schema.id.type, 'int4')
  assert.equal(schema.id.pk_index, 0, 'the primary key column carries pk_index')
  for (const name of NAMES) {
    const want = expectedSchema[name]
    // Only the fields the client's parser reads (type, dims) plus the
    // documented max_length; other typmod extras are not pinned here.
    const got = Object.fromEntries(Object.keys(want).map((field) => [field, schema[name][field]]))
    assert.deepStrictEqual(got, want, `electric-schema entry for ${name}: ${JSON.stringify(schema[name])}`)
    if (!('dims' in want)) assert.equal(schema[name].dims, undefined, `${name} is not an array`)
  }
})
