package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		target string
		status int
		ctype  string
		body   string // a fragment the body must contain
	}{
		{"/", 200, "text/html; charset=utf-8", `id="start"`},
		{"/r/standup", 200, "text/html; charset=utf-8", `id="tiles"`},
		{"/r/team%20sync", 200, "text/html; charset=utf-8", `id="tiles"`},
		{"/r/caf%C3%A9%2F%3Cb%3E", 200, "text/html; charset=utf-8", `id="tiles"`},
		{"/huddle.js", 200, "text/javascript; charset=utf-8", "export async function connect"},
		{"/app.js", 200, "text/javascript; charset=utf-8", "window.huddle"},
		{"/home.js", 200, "text/javascript; charset=utf-8", "/r/"},
		{"/style.css", 200, "text/css; charset=utf-8", ".tile"},
		{"/doc.js", 200, "text/javascript; charset=utf-8", "export class DocSession"},
		{"/editor.js", 200, "text/javascript; charset=utf-8", "export function mountDoc"},
		{"/r/standup", 200, "text/html; charset=utf-8", `id="doc-text"`},
		{"/doc.test.js", 404, "", ""},
		{"/nope.js", 404, "", ""},
		{"/huddle.test.js", 404, "", ""},
		{"/call.html", 404, "", ""},
		{"/index.html", 404, "", ""},
		{"/r/", 404, "", ""},
		{"/r/a/b", 404, "", ""},
		{"/static/huddle.js", 404, "", ""},
	}
	for _, tt := range tests {
		res := get(t, h, http.MethodGet, tt.target, nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != tt.status {
			t.Errorf("GET %s: status %d, want %d", tt.target, res.StatusCode, tt.status)
			continue
		}
		if tt.status != 200 {
			continue
		}
		if got := res.Header.Get("Content-Type"); got != tt.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tt.target, got, tt.ctype)
		}
		if got := res.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", tt.target, got)
		}
		if res.Header.Get("ETag") == "" {
			t.Errorf("GET %s: no ETag", tt.target)
		}
		if !strings.Contains(string(body), tt.body) {
			t.Errorf("GET %s: body does not contain %q", tt.target, tt.body)
		}
		isPage := strings.HasPrefix(tt.ctype, "text/html")
		if got := res.Header.Get("Content-Security-Policy") != ""; got != isPage {
			t.Errorf("GET %s: has Content-Security-Policy = %v, want %v", tt.target, got, isPage)
		}
	}
}

func TestHandlerMethodsAndRevalidation(t *testing.T) {
	h := Handler()

	res := get(t, h, http.MethodPost, "/", nil)
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", res.StatusCode)
	}

	res = get(t, h, http.MethodHead, "/huddle.js", nil)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD /huddle.js: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}

	first := get(t, h, http.MethodGet, "/style.css", nil)
	etag := first.Header.Get("ETag")
	again := get(t, h, http.MethodGet, "/style.css", http.Header{"If-None-Match": {etag}})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("GET /style.css with If-None-Match %s: status %d, want 304", etag, again.StatusCode)
	}

	// Two rooms share one page; the page reads the room from its address.
	a := get(t, h, http.MethodGet, "/r/one", nil)
	b := get(t, h, http.MethodGet, "/r/two", nil)
	if a.Header.Get("ETag") != b.Header.Get("ETag") {
		t.Errorf("room pages differ: %s vs %s", a.Header.Get("ETag"), b.Header.Get("ETag"))
	}
	if got := a.Header.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("room page Referrer-Policy %q, want no-referrer", got)
	}
}

// TestEveryAssetEmbedded guards the go:embed list: every page, module and
// stylesheet in the folder is served, and no test file is.
func TestEveryAssetEmbedded(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	assets := load()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		switch path.Ext(name) {
		case ".html", ".js", ".css", ".svg":
		default:
			continue
		}
		_, ok := assets[name]
		if test := strings.HasSuffix(name, ".test.js"); ok == test {
			t.Errorf("%s: embedded = %v; add assets (and only assets) to the go:embed line in web.go", name, ok)
		}
	}
}

// In a cluster the call page may connect to the other live nodes (to check
// which answers before moving there); nothing else joins its policy.
func TestCallPagePolicyAllowsClusterNodes(t *testing.T) {
	h := HandlerWith(Config{PeerOrigins: func(context.Context) []string {
		return []string{"http://10.0.0.2:7880/", "https://node-b.example:8443", "javascript:alert(1)", "http://evil; script-src *", "ftp://x", "http://user@host:1"}
	}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/r/standup", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "connect-src 'self' http://10.0.0.2:7880 https://node-b.example:8443;") {
		t.Errorf("policy %q; want the two nodes' origins in connect-src", csp)
	}
	for _, bad := range []string{"javascript", "evil", "ftp", "user@"} {
		if strings.Contains(csp, bad) {
			t.Errorf("policy %q lets %q in", csp, bad)
		}
	}
	if n := strings.Count(csp, "script-src"); n != 1 {
		t.Errorf("policy %q has %d script-src directives", csp, n)
	}
	// The start page and a server without a cluster keep the plain policy.
	for _, c := range []struct {
		h    http.Handler
		path string
	}{{h, "/"}, {Handler(), "/r/standup"}} {
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		if got := rec.Header().Get("Content-Security-Policy"); got != pagePolicy {
			t.Errorf("%s: policy %q; want the plain one", c.path, got)
		}
	}
}
