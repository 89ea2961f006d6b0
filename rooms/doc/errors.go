package doc

import (
	"errors"
	"fmt"
)

// ErrorKind is the stable code of a refusal. The same strings name the
// expected errors in the conformance vectors and are meant to be sent as the
// error code on the wire. An ErrorKind is itself an error, so
// errors.Is(err, doc.ErrLengthMismatch) works on every error of this package.
type ErrorKind string

// Kinds of invalid operations.
const (
	// ErrMalformed: not an operation at all (bad JSON, a component that is
	// neither retain, insert nor delete, a count that is not a safe integer).
	ErrMalformed ErrorKind = "malformed"
	// ErrZeroLength: a retain or delete of 0, or an empty insert.
	ErrZeroLength ErrorKind = "zero_length"
	// ErrNotNormalized: two adjacent components of the same kind, or a delete
	// directly followed by an insert (the insert must come first).
	ErrNotNormalized ErrorKind = "not_normalized"
	// ErrInvalidUTF8: inserted text that is not valid UTF-8 (or, from JSON,
	// holds an unpaired surrogate escape).
	ErrInvalidUTF8 ErrorKind = "invalid_utf8"
	// ErrLengthMismatch: the operation does not span the text (or the other
	// operation) it is applied to, composed or transformed with.
	ErrLengthMismatch ErrorKind = "length_mismatch"
	// ErrOutOfRange: a position, cursor or version outside what exists.
	ErrOutOfRange ErrorKind = "out_of_range"
)

// Kinds of refusals by a Document or a Store.
const (
	// ErrTooFarBehind: the base version is older than the retained log or more
	// than Options.MaxBehind versions behind; the error is a *BehindError.
	ErrTooFarBehind ErrorKind = "too_far_behind"
	// ErrFutureVersion: the base version is newer than the document.
	ErrFutureVersion ErrorKind = "future_version"
	// ErrStaleSeq: the sequence number is lower than the client's last
	// committed one (that request was handled before).
	ErrStaleSeq ErrorKind = "stale_seq"
	// ErrBadRequest: an empty client id or a zero sequence number.
	ErrBadRequest ErrorKind = "bad_request"
	// ErrNothingToUndo: undo or redo with an empty stack, or whose operation
	// is older than the retained log.
	ErrNothingToUndo ErrorKind = "nothing_to_undo"
	// ErrClosed: the Document or Store is closed, or failed to commit and
	// must be reopened.
	ErrClosed ErrorKind = "closed"
	// ErrNotFound: the Store holds no such document.
	ErrNotFound ErrorKind = "not_found"
	// ErrVersionConflict: a Store was asked to append versions that do not
	// follow its last one (two writers for one document).
	ErrVersionConflict ErrorKind = "version_conflict"
	// ErrCorrupt: the Store returned records that do not replay.
	ErrCorrupt ErrorKind = "corrupt"
)

func (k ErrorKind) Error() string { return "doc: " + string(k) }

// Error is a refusal with its kind and what was wrong.
type Error struct {
	Kind ErrorKind
	// Index is the offending component of the operation, or -1.
	Index  int
	Detail string
}

func (e *Error) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("doc: %s at component %d: %s", string(e.Kind), e.Index, e.Detail)
	}
	return fmt.Sprintf("doc: %s: %s", string(e.Kind), e.Detail)
}

// Unwrap returns the kind, so that errors.Is matches it.
func (e *Error) Unwrap() error { return e.Kind }

func errAt(kind ErrorKind, index int, format string, args ...any) *Error {
	return &Error{Kind: kind, Index: index, Detail: fmt.Sprintf(format, args...)}
}

func errf(kind ErrorKind, format string, args ...any) *Error {
	return errAt(kind, -1, format, args...)
}

// KindOf returns the kind of err if it is (or wraps) an error of this
// package, and "" otherwise.
func KindOf(err error) ErrorKind {
	var k ErrorKind
	if errors.As(err, &k) {
		return k
	}
	return ""
}

// BehindError refuses an operation whose base version is too old. It holds
// what the client needs to start again: a durable snapshot, and the highest
// sequence number of the client's that is committed (its operations with
// that number or lower are already in the snapshot; later ones are not and
// cannot be transformed, so the client gets them back to redo or drop).
type BehindError struct {
	Base     uint64
	Snapshot Snapshot
	LastSeq  uint64
}

func (e *BehindError) Error() string {
	return fmt.Sprintf("doc: %s: base version %d, document at version %d", string(ErrTooFarBehind), e.Base, e.Snapshot.Version)
}

// Unwrap returns ErrTooFarBehind.
func (e *BehindError) Unwrap() error { return ErrTooFarBehind }
