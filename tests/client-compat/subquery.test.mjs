import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isChangeMessage } from '@electric-sql/client'
import { useDatabase, uniqueName, syncShape, byId, plain, summarize } from './helpers.mjs'

const db = useDatabase()

// The pinned client's `Shape` ignores move events (it keeps moved-out rows:
// real Electric fails a removal flow the same way), so this folds the
// stream's messages the way a tag-tracking client does (Electric's
// TagTracker, TanStack's processMoveOutEvent): a pattern {pos, value}
// matches rows whose tag holds `value` at slot `pos`; move-out turns that
// position inactive and drops rows with no fully active disjunct, move-in
// turns it active again.
function fold(messages) {
  const rows = new Map()
  const included = (row) =>
    row.tags.some((tag) =>
      tag
        .split('/')
        .every((slot, position) => slot === '' || row.active[position] === true)
    )
  for (const message of messages) {
    const headers = message.headers
    if (headers.event === 'move-in' || headers.event === 'move-out') {
      for (const row of rows.values()) {
        for (const { pos, value } of headers.patterns) {
          if (row.tags.some((tag) => tag.split('/')[pos] === value)) {
            row.active[pos] = headers.event === 'move-in'
          }
        }
      }
      if (headers.event === 'move-out') {
        for (const [key, row] of rows) {
          if (!included(row)) rows.delete(key)
        }
      }
      continue
    }
    if (!isChangeMessage(message)) continue
    const tags = headers.tags ?? []
    const active = [...(headers.active_conditions ?? [])]
    switch (headers.operation) {
      case 'insert':
        rows.set(message.key, { value: { ...message.value }, tags, active })
        break
      case 'update': {
        const row = rows.get(message.key)
        assert.ok(row, `update of a row the client does not hold: ${message.key}`)
        Object.assign(row.value, message.value)
        row.tags = tags
        row.active = active
        break
      }
      case 'delete':
        rows.delete(message.key)
        break
    }
  }
  return byId([...rows.values()].map((row) => row.value))
}

test('a membership shape follows adds and removals of memberships', { timeout: 120_000 }, async (t) => {
  const tasks = uniqueName('sq_tasks')
  const members = uniqueName('sq_members')
  await db.query(`CREATE TABLE ${tasks} (id int4 PRIMARY KEY, project_id int4, title text NOT NULL)`)
  await db.query(`CREATE TABLE ${members} (user_id int4, project_id int4, PRIMARY KEY (user_id, project_id))`)
  await db.query(`INSERT INTO ${tasks} SELECT g, g % 5, 'task ' || g FROM generate_series(1, 25) g`)
  await db.query(`INSERT INTO ${members} VALUES (1, 1), (1, 2), (2, 3)`)
  const where = `project_id IN (SELECT project_id FROM ${members} WHERE user_id = $1)`
  const current = async () =>
    (
      await db.query(
        `SELECT id, project_id, title FROM ${tasks} WHERE project_id IN (SELECT project_id FROM ${members} WHERE user_id = 1)`
      )
    ).rows

  const sync = syncShape(t, { table: tasks, where, params: { 1: '1' } })
  const initial = await sync.initialRows()
  assert.deepStrictEqual(plain(initial), byId(plain(await current())))
  const untilFolded = async (what) => {
    const want = byId(plain(await current()))
    await sync.until(
      what,
      () => {
        try {
          assert.deepStrictEqual(plain(fold(sync.messages)), want)
          return true
        } catch {
          return false
        }
      },
      { detail: () => `expected ${summarize(want)}\n  folded ${summarize(fold(sync.messages))}` }
    )
  }

  // Adds: the project's rows move in, and the client's Shape gets them too.
  await db.query(`INSERT INTO ${members} VALUES (1, 3)`)
  await untilFolded('a membership added')
  await sync.untilRowsEqual('the Shape after an add', await current())

  // Removals: one move-out event, no per-row deletes.
  const before = sync.messages.length
  await db.query(`DELETE FROM ${members} WHERE user_id = 1 AND project_id = 1`)
  await untilFolded('a membership removed')
  const since = sync.messages.slice(before)
  assert.ok(
    since.some((m) => m.headers.event === 'move-out'),
    `a move-out event: ${summarize(since)}`
  )
  assert.ok(
    !since.some((m) => isChangeMessage(m) && m.headers.operation === 'delete'),
    `no per-row deletes: ${summarize(since)}`
  )

  // Rows and memberships changing together, in and out of the shape.
  await db.query(`UPDATE ${tasks} SET project_id = 4 WHERE id IN (2, 3)`)
  await db.query(`BEGIN; INSERT INTO ${members} VALUES (1, 4); INSERT INTO ${tasks} VALUES (100, 4, 'new'); COMMIT`)
  await db.query(`DELETE FROM ${members} WHERE user_id = 1 AND project_id = 2`)
  await db.query(`INSERT INTO ${tasks} VALUES (101, 2, 'not visible')`)
  await db.query(`UPDATE ${members} SET project_id = 1 WHERE user_id = 1 AND project_id = 3`)
  await untilFolded('the folded stream after mixed changes')
  assert.equal(sync.errors.length, 0)
})

test('a row-form membership shape follows adds and removals of pairs', { timeout: 120_000 }, async (t) => {
  const docs = uniqueName('sq_docs')
  const members = uniqueName('sq_pairs')
  await db.query(`CREATE TABLE ${docs} (id int4 PRIMARY KEY, org_id int4, project_id int4, title text NOT NULL)`)
  await db.query(
    `CREATE TABLE ${members} (user_id int4, org_id int4, project_id int4, PRIMARY KEY (user_id, org_id, project_id))`
  )
  await db.query(`INSERT INTO ${docs} SELECT g, g % 2, g % 3, 'doc ' || g FROM generate_series(1, 24) g`)
  await db.query(`INSERT INTO ${members} VALUES (1, 0, 0), (1, 1, 1), (2, 0, 1)`)
  const where = `(org_id, project_id) IN (SELECT org_id, project_id FROM ${members} WHERE user_id = $1)`
  const current = async () =>
    (
      await db.query(
        `SELECT id, org_id, project_id, title FROM ${docs} WHERE (org_id, project_id) IN (SELECT org_id, project_id FROM ${members} WHERE user_id = 1)`
      )
    ).rows

  const sync = syncShape(t, { table: docs, where, params: { 1: '1' } })
  const initial = await sync.initialRows()
  assert.deepStrictEqual(plain(initial), byId(plain(await current())))
  const untilFolded = async (what) => {
    const want = byId(plain(await current()))
    await sync.until(
      what,
      () => {
        try {
          assert.deepStrictEqual(plain(fold(sync.messages)), want)
          return true
        } catch {
          return false
        }
      },
      { detail: () => `expected ${summarize(want)}\n  folded ${summarize(fold(sync.messages))}` }
    )
  }

  // A pair added: its rows move in, and the client's Shape gets them too.
  await db.query(`INSERT INTO ${members} VALUES (1, 0, 2)`)
  await untilFolded('a pair added')
  await sync.untilRowsEqual('the Shape after an add', await current())

  // A pair removed: one move-out event, no per-row deletes.
  const before = sync.messages.length
  await db.query(`DELETE FROM ${members} WHERE user_id = 1 AND org_id = 1 AND project_id = 1`)
  await untilFolded('a pair removed')
  const since = sync.messages.slice(before)
  assert.ok(
    since.some((m) => m.headers.event === 'move-out'),
    `a move-out event: ${summarize(since)}`
  )
  assert.ok(
    !since.some((m) => isChangeMessage(m) && m.headers.operation === 'delete'),
    `no per-row deletes: ${summarize(since)}`
  )

  // One column of a pair changing, rows moving between pairs.
  await db.query(`UPDATE ${members} SET org_id = 1 WHERE user_id = 1 AND org_id = 0 AND project_id = 0`)
  await db.query(`UPDATE ${docs} SET project_id = 2 WHERE id IN (3, 4)`)
  await db.query(`BEGIN; INSERT INTO ${members} VALUES (1, 1, 2); INSERT INTO ${docs} VALUES (100, 1, 2, 'new'); COMMIT`)
  await untilFolded('the folded stream after mixed changes')
  assert.equal(sync.errors.length, 0)
})
