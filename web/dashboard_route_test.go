package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDashboardRoutes: /dashboard is a page with the page policy; the
// vendored uPlot and its licence are served; unknown vendor files are 404.
func TestDashboardRoutes(t *testing.T) {
	h := Handler()
	get := func(path string) *http.Response {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Result()
	}
	res := get("/dashboard")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Security-Policy") == "" || !strings.Contains(string(body), "/vendor/uPlot.iife.min.js") {
		t.Fatalf("/dashboard: %d, CSP %q", res.StatusCode, res.Header.Get("Content-Security-Policy"))
	}
	for path, want := range map[string]string{
		"/vendor/uPlot.iife.min.js": "v1.6.32",
		"/vendor/uPlot.min.css":     ".uplot",
		"/vendor/uPlot.LICENSE":     "MIT",
		"/dashboard.js":             "EventSource",
	} {
		res := get(path)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, body without %q", path, res.StatusCode, want)
		}
	}
	if res := get("/vendor/nope.js"); res.StatusCode != 404 {
		t.Errorf("/vendor/nope.js: %d", res.StatusCode)
	}
	if res := get("/dashboard.html"); res.StatusCode != 404 {
		t.Errorf("/dashboard.html: %d (pages have their own addresses)", res.StatusCode)
	}
}
