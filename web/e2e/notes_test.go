package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// TestNotes types into the shared notes from two tabs at the same time,
// with real key events: both end with the same text, equal to what a third
// tab then gets from the server, each shows the other's caret with its
// name and the other's selection, and a restore from the history panel
// and its undo reach both tabs.
func TestNotes(t *testing.T) {
	bin := os.Getenv("HUDDLE_BIN")
	if bin == "" {
		t.Skip("HUDDLE_BIN is not set: run `make e2e`, which builds the server and runs this test in a loopback-only network namespace")
	}
	chrome := findChromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	start := time.Now()
	srv := startServer(ctx, t, bin)
	b := startBrowserWithoutMedia(ctx, t, chrome)
	tabA := b.newTab(t, "Ada")
	tabB := b.newTab(t, "Bob")
	t.Cleanup(func() {
		if t.Failed() {
			b.dump(t)
			srv.dump(t)
		}
	})
	const room = "notes room"
	open := func(tb *tab) {
		u := srv.base + "/r/" + url.PathEscape(room) + "?name=" + url.QueryEscape(tb.name)
		if err := chromedp.Do(tb.ctx, chromedp.Navigate(u)); err != nil {
			t.Fatalf("tab %s: navigate to %s: %v", tb.name, u, err)
		}
	}
	open(tabA)
	open(tabB)
	for _, tb := range []*tab{tabA, tabB} {
		waitFor(t, tb, "joined", 60*time.Second, `['joined', 'media'].includes(window.huddle?.state)`)
		waitFor(t, tb, "the notes are ready and visible", 60*time.Second,
			`window.huddle.doc?.ready && !document.getElementById('doc').hidden && !document.getElementById('doc-text').readOnly`)
	}
	t.Logf("both tabs joined, notes ready after %v", time.Since(start).Round(time.Millisecond))

	// Ada writes a first line; Bob sees it.
	typeKeys(t, tabA, "Hello from Ada.\n")
	waitSame(t, 20*time.Second, tabA, tabB)
	first := docText(t, tabA)
	firstVersion, err := eval[int](tabA, `window.huddle.doc.version`)
	if err != nil {
		t.Fatalf("tab Ada: version: %v", err)
	}
	if first != "Hello from Ada.\n" {
		t.Fatalf("after Ada's first line the text is %q", first)
	}

	// Now both type at once: Ada at the end, Bob at the start, each with
	// a slip corrected by Backspace, key by key, interleaved in time.
	adaText := "Ada types at the end, 日本語 and é too."
	bobText := "Bob writes first! "
	var wg sync.WaitGroup
	typed := time.Now()
	for _, job := range []struct {
		tb   *tab
		home string
		text string
	}{{tabA, kb.End, adaText}, {tabB, kb.Home, bobText}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			moveCaret(t, job.tb, job.home)
			half := len([]rune(job.text)) / 2
			r := []rune(job.text)
			for i, part := range []string{string(r[:half]), "x" + kb.Backspace, string(r[half:])} {
				if err := sendKeys(job.tb, part); err != nil {
					t.Errorf("tab %s: typing part %d: %v", job.tb.name, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("both typed %d and %d characters at once in %v", len([]rune(adaText)), len([]rune(bobText)), time.Since(typed).Round(time.Millisecond))
	text := waitSame(t, 15*time.Second, tabA, tabB)
	// Ctrl+End put Ada after the first line's line break.
	if want := bobText + first + adaText; text != want {
		t.Fatalf("converged text %q; want %q", text, want)
	}
	t.Logf("converged on %q after %v", text, time.Since(typed).Round(time.Millisecond))

	// A third tab gets the server's text in its snapshot.
	tabC := b.newTab(t, "Cy")
	open(tabC)
	waitFor(t, tabC, "joined", 60*time.Second, `['joined', 'media'].includes(window.huddle?.state)`)
	waitFor(t, tabC, "notes ready", 60*time.Second, `window.huddle.doc?.ready`)
	if got := docText(t, tabC); got != text {
		t.Fatalf("the server's text (a new tab's snapshot) is %q; the editors have %q", got, text)
	}

	// Each tab shows the other's caret, labelled with the name, where the
	// other's caret is; a selection shows as a highlight.
	for _, p := range []struct{ viewer, other *tab }{{tabA, tabB}, {tabB, tabA}} {
		waitFor(t, p.viewer, p.other.name+"'s caret label is visible", 20*time.Second, fmt.Sprintf(
			`[...document.querySelectorAll('#doc-overlay .caret-label')].some(l => l.textContent === %q && l.getBoundingClientRect().width > 0)`, p.other.name))
	}
	// Bob's caret is just after his text (code points).
	bobCaret := len([]rune(bobText))
	waitFor(t, tabA, "Bob's caret at the end of his text", 20*time.Second, fmt.Sprintf(
		`window.huddle.doc.cursors().some(c => c.name === 'Bob' && c.head === %d && c.anchor === %d)`, bobCaret, bobCaret))
	if _, err := eval[bool](tabB, `(() => { const ta = document.getElementById('doc-text'); ta.focus(); ta.setSelectionRange(0, 3); ta.dispatchEvent(new Event('select')); return true; })()`); err != nil {
		t.Fatalf("tab Bob: select: %v", err)
	}
	waitFor(t, tabA, "Bob's selection highlighted", 20*time.Second,
		`[...document.querySelectorAll('#doc-overlay mark.sel')].some(m => m.textContent === 'Bob' && getComputedStyle(m).backgroundColor !== 'rgba(0, 0, 0, 0)')`)
	t.Logf("each tab shows the other's caret and name; Ada sees Bob's selection")
	if dir := os.Getenv("HUDDLE_E2E_SCREENSHOTS"); dir != "" {
		b.screenshots(t, dir)
	}

	// Ada restores the first version from the history panel; everyone
	// gets it. Then her undo (the button) brings the text back.
	if _, err := eval[bool](tabA, `(document.querySelector('#doc [data-tab="history"]').click(), true)`); err != nil {
		t.Fatalf("tab Ada: open history: %v", err)
	}
	sel := fmt.Sprintf(`#doc-history-list li[data-version="%d"] button.restore`, firstVersion)
	waitFor(t, tabA, "the history lists the first line's version", 20*time.Second, fmt.Sprintf(`document.querySelector(%q)`, sel))
	authors, err := eval[[]string](tabA, `[...document.querySelectorAll('#doc-history-list li .who strong')].map(e => e.textContent)`)
	if err != nil || !contains(authors, "You") || !contains(authors, "Bob") {
		t.Errorf("history authors %v (%v); want You and Bob among them", authors, err)
	}
	if _, err := eval[bool](tabA, fmt.Sprintf(`(document.querySelector(%q).click(), true)`, sel)); err != nil {
		t.Fatalf("tab Ada: restore: %v", err)
	}
	for _, tb := range []*tab{tabA, tabB, tabC} {
		waitFor(t, tb, "the restored text", 20*time.Second, fmt.Sprintf(`window.huddle.doc.text === %q && document.getElementById('doc-text').value === %q`, first, first))
	}
	waitFor(t, tabA, "the history shows the restore", 20*time.Second, `document.querySelector('#doc-history-list li')?.textContent.includes('restored')`)
	if _, err := eval[bool](tabA, `(document.getElementById('doc-undo').click(), true)`); err != nil {
		t.Fatalf("tab Ada: undo: %v", err)
	}
	for _, tb := range []*tab{tabA, tabB, tabC} {
		waitFor(t, tb, "the text before the restore, after Ada's undo", 20*time.Second, fmt.Sprintf(`window.huddle.doc.text === %q`, text))
	}
	t.Logf("restore and undo reached every tab after %v", time.Since(start).Round(time.Millisecond))

	// Bob comments on "Hello"; Ada sees the range highlighted and the
	// thread, replies and resolves it; Bob sees both.
	hello := strings.Index(text, "Hello")
	selectText(t, tabB, hello, hello+len("Hello"))
	if _, err := eval[bool](tabB, `(() => {
		document.querySelector('#doc [data-tab="comments"]').click();
		const box = document.querySelector('#doc-compose textarea');
		box.value = 'Who is this for?';
		box.dispatchEvent(new Event('input'));
		document.querySelector('#doc-compose [data-act="comment"]').click();
		return true; })()`); err != nil {
		t.Fatalf("tab Bob: comment: %v", err)
	}
	waitFor(t, tabA, "Bob's comment range highlighted", 20*time.Second, `[...document.querySelectorAll('#doc-overlay mark.cmt')].some(m => m.textContent === 'Hello')`)
	if _, err := eval[bool](tabA, `(document.querySelector('#doc [data-tab="comments"]').click(), true)`); err != nil {
		t.Fatalf("tab Ada: comments tab: %v", err)
	}
	waitFor(t, tabA, "Bob's thread listed", 20*time.Second, `[...document.querySelectorAll('#doc-comments-list li.thread')].some(li => li.textContent.includes('Who is this for?') && li.textContent.includes('Bob'))`)
	if _, err := eval[bool](tabA, `(() => {
		const li = document.querySelector('#doc-comments-list li.thread');
		li.querySelector('textarea').value = 'For everyone.';
		[...li.querySelectorAll('button')].find(b => b.textContent === 'Reply').click();
		return true; })()`); err != nil {
		t.Fatalf("tab Ada: reply: %v", err)
	}
	waitFor(t, tabA, "the reply listed", 20*time.Second, `document.querySelector('#doc-comments-list li.thread')?.textContent.includes('For everyone.')`)
	if _, err := eval[bool](tabA, `([...document.querySelectorAll('#doc-comments-list li.thread button')].find(b => b.textContent === 'Resolve').click(), true)`); err != nil {
		t.Fatalf("tab Ada: resolve: %v", err)
	}
	waitFor(t, tabB, "the thread replied to and resolved", 20*time.Second,
		`(() => { const li = document.querySelector('#doc-comments-list li.thread'); return li && li.classList.contains('resolved') && li.querySelectorAll('.comments > li').length === 2; })()`)
	waitFor(t, tabA, "a resolved thread is no longer highlighted", 20*time.Second, `!document.querySelector('#doc-overlay mark.cmt')`)
	// Bob reopens it: highlighted again for Ada.
	if _, err := eval[bool](tabB, `([...document.querySelectorAll('#doc-comments-list li.thread button')].find(b => b.textContent === 'Reopen').click(), true)`); err != nil {
		t.Fatalf("tab Bob: reopen: %v", err)
	}
	waitFor(t, tabA, "the reopened thread highlighted again", 20*time.Second,
		`!document.querySelector('#doc-comments-list li.thread').classList.contains('resolved') && [...document.querySelectorAll('#doc-overlay mark.cmt')].some(m => m.textContent === 'Hello')`)

	// Bob suggests "second" instead of "first"; Ada accepts it.
	firstAt := strings.Index(text, "first")
	selectText(t, tabB, firstAt, firstAt+len("first"))
	if _, err := eval[bool](tabB, `(() => {
		const box = document.querySelector('#doc-compose textarea');
		box.value = 'second';
		box.dispatchEvent(new Event('input'));
		document.querySelector('#doc-compose [data-act="suggest"]').click();
		return true; })()`); err != nil {
		t.Fatalf("tab Bob: suggest: %v", err)
	}
	waitFor(t, tabA, "Bob's suggestion listed", 20*time.Second, `(() => { const li = document.querySelector('#doc-comments-list li.suggestion'); return li && li.querySelector('del')?.textContent === 'first' && li.querySelector('ins')?.textContent === 'second'; })()`)
	waitFor(t, tabC, "the suggested deletion drawn in the text", 20*time.Second, `[...document.querySelectorAll('#doc-overlay mark.del')].some(m => m.textContent === 'first') && document.querySelector('#doc-overlay .ins')`)
	if dir := os.Getenv("HUDDLE_E2E_SCREENSHOTS"); dir != "" {
		b.screenshots(t, dir+"/suggest")
	}
	if _, err := eval[bool](tabA, `([...document.querySelectorAll('#doc-comments-list li.suggestion button')].find(b => b.textContent === 'Accept').click(), true)`); err != nil {
		t.Fatalf("tab Ada: accept: %v", err)
	}
	accepted := strings.Replace(text, "first", "second", 1)
	for _, tb := range []*tab{tabA, tabB, tabC} {
		waitFor(t, tb, "the accepted suggestion in the text", 20*time.Second, fmt.Sprintf(`window.huddle.doc.text === %q && !document.querySelector('#doc-comments-list li.suggestion')`, accepted))
	}
	if dir := os.Getenv("HUDDLE_E2E_SCREENSHOTS"); dir != "" {
		b.screenshots(t, dir+"/comments")
	}

	// Bob's page reloads right after an edit, with the edit in flight: the
	// first time its ack is lost (the page ignores it), the second time the
	// edit itself never leaves. Kept in session storage, it is resubmitted
	// with its seq after the reload and lands exactly once.
	for i, lose := range []string{"s.receive = () => {};", "s.sendRaw = () => {};"} {
		if _, err := eval[bool](tabB, `(() => {
			const s = window.huddle.doc.session;
			`+lose+`
			s.edit([[...s.text].length, ' (reloaded)']);
			location.reload();
			return true; })()`); err != nil && !strings.Contains(err.Error(), "context") {
			t.Logf("tab Bob: edit and reload %d: %v", i, err)
		}
		accepted += " (reloaded)"
		t.Logf("reload %d: want %q", i, accepted)
		waitFor(t, tabB, "joined again", 60*time.Second, `['joined', 'media'].includes(window.huddle?.state)`)
		for _, tb := range []*tab{tabA, tabB, tabC} {
			waitFor(t, tb, "the edit made before the reload, once", 30*time.Second, fmt.Sprintf(`window.huddle.doc?.ready && window.huddle.doc.text === %q`, accepted))
		}
		// The reloaded page found the edit in flight and resent it.
		stats, err := eval[map[string]int](tabB, `window.huddle.doc.session.stats`)
		if err != nil || stats["resubmitted"] != 1 || (i == 1 && stats["committedBefore"] != 0) {
			t.Fatalf("tab Bob after reload %d: stats %v (%v); want one resubmission", i, stats, err)
		}
		t.Logf("reload %d: the edit in flight was resubmitted (committed before the reload: %v)", i, stats["committedBefore"] > 0)
	}
	if got := waitSame(t, 20*time.Second, tabA, tabB, tabC); got != accepted {
		t.Fatalf("after the reloads the text is %q; want %q", got, accepted)
	}
	t.Logf("edits made just before two reloads landed exactly once")

	// Ada types through an input method (a composition) at the end while
	// Bob types at the start: her textarea is left alone while she
	// composes, then both edits meet.
	if _, err := eval[bool](tabA, `(window.huddle.doc.showTab('notes'), true)`); err != nil {
		t.Fatalf("tab Ada: notes tab: %v", err)
	}
	moveCaret(t, tabA, kb.End)
	ime := func(text string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tabA.ctx, 20*time.Second)
		defer cancel()
		n := int64(len([]rune(text)))
		if _, err := chromedp.Call(ctx, input.ImeSetComposition, input.ImeSetCompositionParams{Text: text, SelectionStart: n, SelectionEnd: n}); err != nil {
			t.Fatalf("tab Ada: compose %q: %v", text, err)
		}
	}
	ime("に")
	ime("にほ")
	moveCaret(t, tabB, kb.Home)
	typeKeys(t, tabB, "IME! ")
	waitFor(t, tabA, "Bob's edit reached Ada's document while she composes", 20*time.Second,
		`window.huddle.doc.text.startsWith('IME! ') && document.getElementById('doc-text').value.endsWith('にほ') && !document.getElementById('doc-text').value.startsWith('IME! ')`)
	{
		ctx, cancel := context.WithTimeout(tabA.ctx, 20*time.Second)
		if _, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: "日本"}); err != nil {
			t.Fatalf("tab Ada: commit the composition: %v", err)
		}
		cancel()
	}
	accepted = "IME! " + accepted + "日本"
	if got := waitSame(t, 20*time.Second, tabA, tabB, tabC); got != accepted {
		t.Fatalf("after the composition the text is %q; want %q", got, accepted)
	}
	t.Logf("a composition concurrent with another's typing converged")
	t.Logf("comment, reply, resolve, suggest and accept reached every tab; total %v", time.Since(start).Round(time.Millisecond))
}

// selectText selects code points from..to of the notes (ASCII text here).
func selectText(t *testing.T, tb *tab, from, to int) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const ta = document.getElementById('doc-text'); ta.focus(); ta.setSelectionRange(%d, %d); ta.dispatchEvent(new Event('select')); return true; })()`, from, to)
	if _, err := eval[bool](tb, js); err != nil {
		t.Fatalf("tab %s: select %d..%d: %v", tb.name, from, to, err)
	}
}

// startBrowserWithoutMedia is startBrowser with no camera or microphone:
// the notes need none, and decoding video would only load the machine.
// The pages join to watch and listen.
func startBrowserWithoutMedia(ctx context.Context, t *testing.T, chrome string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-component-update", true),
	)
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(stopAlloc)
	bctx, stopBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		_ = chromedp.Cancel(bctx)
		stopBrowser()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chrome, err)
	}
	return &browser{ctx: bctx}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sendKeys types keys into the notes with real key events.
func sendKeys(tb *tab, keys string) error {
	ctx, cancel := context.WithTimeout(tb.ctx, time.Minute)
	defer cancel()
	return chromedp.Do(ctx, chromedp.SendKeys(chromedp.ID("doc-text"), keys))
}

func typeKeys(t *testing.T, tb *tab, keys string) {
	t.Helper()
	if err := sendKeys(tb, keys); err != nil {
		t.Fatalf("tab %s: type %q: %v", tb.name, keys, err)
	}
}

// moveCaret focuses the notes and presses Ctrl+key (Home or End).
func moveCaret(t *testing.T, tb *tab, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	err := chromedp.Do(ctx,
		chromedp.Focus(chromedp.ID("doc-text")),
		chromedp.KeyEvent(key, chromedp.KeyModifiers(chromedp.ModifierCtrl)),
	)
	if err != nil {
		t.Errorf("tab %s: move caret: %v", tb.name, err)
	}
}

// docText is the tab's document text, checked against its textarea.
func docText(t *testing.T, tb *tab) string {
	t.Helper()
	s, err := eval[[]string](tb, `[window.huddle.doc.text, document.getElementById('doc-text').value]`)
	if err != nil || len(s) != 2 {
		t.Fatalf("tab %s: text: %v", tb.name, err)
	}
	if s[0] != s[1] {
		t.Fatalf("tab %s: the textarea shows %q, the document is %q", tb.name, s[1], s[0])
	}
	return s[0]
}

// waitSame waits until every tab is synchronized with the same text and
// version, and returns the text.
func waitSame(t *testing.T, limit time.Duration, tabs ...*tab) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	var last []string
	for time.Now().Before(deadline) {
		last = last[:0]
		same := true
		for _, tb := range tabs {
			s, err := eval[string](tb, `(() => { const d = window.huddle.doc; return d.state + '|' + d.version + '|' + (d.text === document.getElementById('doc-text').value) + '|' + d.text; })()`)
			if err != nil {
				same = false
				last = append(last, err.Error())
				continue
			}
			last = append(last, s)
			if !strings.HasPrefix(s, "synchronized|") || !strings.Contains(s, "|true|") || s != last[0] {
				same = false
			}
		}
		if same {
			return last[0][strings.Index(last[0], "|true|")+len("|true|"):]
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("tabs did not converge within %v: %q", limit, last)
	return ""
}
