package statuspage

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// csp allows the page its own script, style and same-origin requests, and
// nothing else: no inline script, no framing, no form posts, no plugins. The
// icon is an empty data: URL, so the browser asks for no /favicon.ico.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page's files from the root of its URL space: mount it with
// http.StripPrefix under the page's path, which must end in "/" (the page
// addresses its files and the admin API relatively). The index is served for
// the root.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// A page left open across an upgrade must pick up the new script.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
