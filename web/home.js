// home.js drives the start page: it asks for a room and a name, then goes
// to the room's call page, /r/<room>?name=<name>.

const ADJECTIVES = ['amber', 'brisk', 'calm', 'bright', 'quiet', 'lucky', 'swift', 'mellow'];
const NOUNS = ['otter', 'falcon', 'maple', 'harbor', 'comet', 'meadow', 'lantern', 'river'];

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

const form = document.getElementById('start');
const room = document.getElementById('room');
const name = document.getElementById('name');

room.value = `${pick(ADJECTIVES)}-${pick(NOUNS)}-${Math.floor(Math.random() * 90 + 10)}`;
name.value = localStorage.getItem('huddle.name') ?? '';
(name.value ? room : name).focus();

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const r = room.value.trim();
  const n = name.value.trim();
  if (!r || !n) return;
  localStorage.setItem('huddle.name', n);
  location.assign(`/r/${encodeURIComponent(r)}?name=${encodeURIComponent(n)}`);
});
