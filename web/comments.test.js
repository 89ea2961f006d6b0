// Tests of web/comments.js's pure part, run by `node --test web/`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe } from './comments.js';

test('describe lists what a suggestion deletes and inserts, where', () => {
  assert.deepEqual(describe([4, 'very ', 6], 'Hey, world'), [{ kind: 'ins', text: 'very ', at: 4 }]);
  assert.deepEqual(describe([5, 'big', -5], 'Hey, world'), [
    { kind: 'ins', text: 'big', at: 5 },
    { kind: 'del', text: 'world', at: 5 },
  ]);
  // Code points: the emoji is one.
  assert.deepEqual(describe([1, -1, 'b', 1], 'a😀c'), [{ kind: 'del', text: '😀', at: 1 }, { kind: 'ins', text: 'b', at: 2 }]);
});
