// Package doc owns Huddle's collaborative text documents: the operation
// model (retain, insert and delete over Unicode code points; Apply,
// Compose, Transform, Invert and cursor transforms; the JSON wire form),
// the authoritative Document of a room (ordering, transforming and logging
// every client's operations exactly once, history, restore, undo and redo),
// and the Store interface that makes each operation durable before it is
// acknowledged, with a bbolt implementation (group commit) and a memory one.
//
// It imports nothing else of Huddle. The browser speaks the same model in
// web/ot.js; both run the conformance vectors in testdata/.
package doc
