// Package web owns the browser client: ES modules with no build step,
// embedded with go:embed, the call page, and later the editor and the
// dashboard.
package web

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// The assets. A new page or module is added here; web_test.go checks that
// every asset in the folder is served. Tests (*.test.js) stay out.
//
//go:embed index.html call.html home.js app.js huddle.js ot.js doc.js editor.js comments.js style.css favicon.svg
//go:embed dashboard.html dashboard.js dashboard.css vendor/uPlot.iife.min.js vendor/uPlot.min.css vendor/uPlot.LICENSE
var files embed.FS

// contentTypes maps the extensions of the assets to their types, so that
// the answer does not depend on the machine's MIME tables.
var contentTypes = map[string]string{
	".html":    "text/html; charset=utf-8",
	".js":      "text/javascript; charset=utf-8",
	".css":     "text/css; charset=utf-8",
	".svg":     "image/svg+xml",
	".json":    "application/json",
	".png":     "image/png",
	".ico":     "image/x-icon",
	".LICENSE": "text/plain; charset=utf-8",
}

// pagePolicy is the Content-Security-Policy of the HTML pages: scripts,
// styles and connections (the WebSocket included) only from this server.
const pagePolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// policyWith is pagePolicy with connections also allowed to the origins
// of peers (cluster nodes' base URLs); anything that is not a plain
// http(s) origin is left out, so that no stored URL can change the policy.
func policyWith(peers []string) string {
	var extra strings.Builder
	for _, p := range peers {
		u, err := url.Parse(p)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
			strings.ContainsAny(u.Host, " ;,'\"\\") {
			continue
		}
		extra.WriteString(" " + u.Scheme + "://" + u.Host)
	}
	if extra.Len() == 0 {
		return pagePolicy
	}
	return strings.Replace(pagePolicy, "connect-src 'self'", "connect-src 'self'"+extra.String(), 1)
}

// Config is what the pages need to know of the server that serves them.
type Config struct {
	// PeerOrigins, when set, lists the base URLs of the cluster's live
	// nodes. The call page may then connect to them (its
	// Content-Security-Policy allows it) to check which one answers
	// before it moves there when its own node died.
	PeerOrigins func(ctx context.Context) []string
}

// asset is one embedded file, ready to serve.
type asset struct {
	name  string
	data  []byte
	ctype string
	etag  string
	page  bool
}

// Handler serves the browser client: "/" is the start page (it asks for a
// room and a name), "/r/<room>" is the call page of that room (it joins at
// once, so the address is the meeting link), and "/<file>" the static
// assets (/huddle.js, /app.js, /style.css, …). Every answer says
// Cache-Control: no-cache and carries an ETag, so a browser revalidates and
// gets 304 while nothing changed. Anything else is 404. Only GET and HEAD
// are allowed.
func Handler() http.Handler { return HandlerWith(Config{}) }

// HandlerWith is Handler for a server described by cfg.
func HandlerWith(cfg Config) http.Handler {
	assets := load()
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", assets["index.html"])
	call := assets["call.html"]
	mux.HandleFunc("GET /r/{room}", func(w http.ResponseWriter, r *http.Request) {
		policy := pagePolicy
		if cfg.PeerOrigins != nil {
			ctx, cancel := context.WithTimeout(r.Context(), time.Second)
			policy = policyWith(cfg.PeerOrigins(ctx))
			cancel()
		}
		call.serve(w, r, policy)
	})
	// The dashboard; its data come from /events and /admin (signaling).
	mux.Handle("GET /dashboard", assets["dashboard.html"])
	// Vendored libraries (uPlot 1.6.32, MIT: vendor/uPlot.LICENSE).
	mux.HandleFunc("GET /vendor/{file}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets["vendor/"+r.PathValue("file")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		a.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /{file}", func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.PathValue("file")]
		if !ok || a.page {
			// Pages have their own addresses; /call.html without a room
			// would be a broken page.
			http.NotFound(w, r)
			return
		}
		a.ServeHTTP(w, r)
	})
	return mux
}

// load reads the embedded files once. It panics if the embedded tree is
// unreadable, which would be a build fault.
func load() map[string]*asset {
	out := make(map[string]*asset)
	err := fs.WalkDir(files, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ext := path.Ext(name)
		ctype, ok := contentTypes[ext]
		if !ok {
			ctype = "application/octet-stream"
		}
		out[name] = &asset{
			name:  name,
			data:  data,
			ctype: ctype,
			etag:  `"` + hex.EncodeToString(sum[:12]) + `"`,
			page:  ext == ".html",
		}
		return nil
	})
	if err != nil {
		panic("web: reading embedded assets: " + err.Error())
	}
	return out
}

// ServeHTTP writes the asset, or 304 when the client's copy is current.
func (a *asset) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.serve(w, r, pagePolicy) }

// serve is ServeHTTP with the Content-Security-Policy of a page.
func (a *asset) serve(w http.ResponseWriter, r *http.Request, policy string) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if a.page {
		h.Set("Content-Security-Policy", policy)
		// A page opened with ?token= must not leak it to other sites.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
	}
	// ServeContent answers conditional and range requests (and HEAD).
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.data))
}
