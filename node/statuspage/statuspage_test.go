package statuspage

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestHandlerServesThePage: the index and every file it names are served with
// the security headers, and an unknown file is a 404.
func TestHandlerServesThePage(t *testing.T) {
	srv := httptest.NewServer(http.StripPrefix("/ui", Handler()))
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	resp, index := get("/ui/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /ui/: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if got := resp.Header.Get("Content-Security-Policy"); got != csp || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %v", resp.Header)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(index, -1)
	if len(refs) < 2 {
		t.Fatalf("the index names no files: %s", index)
	}
	for _, ref := range refs {
		name := ref[1]
		if strings.HasPrefix(name, "../") || strings.HasPrefix(name, "data:") {
			continue // the admin API's own paths, and the empty icon
		}
		if resp, _ := get("/ui/" + name); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /ui/%s (named by the index): %s", name, resp.Status)
		}
	}
	if resp, _ := get("/ui/nonexistent.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET an unknown file: %s", resp.Status)
	}
}

// TestAssetsAreSelfContained: the page loads nothing from elsewhere (the CSP
// would refuse it anyway, and the browser would show an error): no absolute
// URL in any asset but the SVG namespace, no inline script or style.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "")
		if m := external.FindString(text); m != "" {
			t.Errorf("%s refers to %q: the page must work without the internet", path, m)
		}
		if strings.HasSuffix(path, ".html") && (regexp.MustCompile(`<script>|<style|\sstyle="|\son[a-z]+="`).MatchString(text)) {
			t.Errorf("%s has inline script or style, which the page's CSP refuses", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
