package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestStatusPage opens a node's status page in headless Chromium and checks what
// a person would see there: every member, the leader marked, request rates that
// move while a load runs, and a member-down warning within seconds of a SIGKILL.
// It also checks that the page fits a phone's width, and fails on any script
// error the page shows (exceptions, console errors, refused content). The
// screenshots go to the test's temp dir, or to DCINT_SCREENSHOT_DIR when set.
func TestStatusPage(t *testing.T) {
	chromium := lookChromium(t)
	c := startCluster(t, 3, clusterOptions{})
	leader := c.waitLeader(30 * time.Second)
	victim := c.followers(leader)[0]
	var st struct {
		LeaderID string `json:"leader_id"`
		Version  string `json:"version"`
	}
	if err := leader.getJSON("/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	shots := os.Getenv("DCINT_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	b := openBrowser(t, chromium, shots)
	// /ui redirects to /ui/, where the page and its files live.
	b.do(chromedp.EmulateViewport(1280, 900), chromedp.Navigate("http://"+leader.adminAddr+"/ui"))

	b.waitJS(15*time.Second, "every member listed, the leader marked, versions shown", fmt.Sprintf(`(() => {
		const rows = [...document.querySelectorAll('#members-body tr')];
		const leaders = rows.filter((r) => r.dataset.leader === 'true').map((r) => r.dataset.member);
		const marked = document.querySelector('#members-body tr[data-leader="true"] .badge.leader');
		const versions = rows.filter((r) => r.textContent.includes(%q)).length;
		return rows.length === 3 && leaders.join() === %q && !!marked && versions === 3 ? true : rows.map((r) => r.textContent).join(' | ');
	})()`, st.Version, st.LeaderID))
	b.waitJS(10*time.Second, "the election in the leadership list", `document.querySelectorAll('#leader-changes li').length > 0 || 'none listed'`)
	b.waitJS(10*time.Second, "nothing wrong said of a healthy cluster", `(() => {
		const items = [...document.querySelectorAll('#trouble-list li')];
		const bad = items.filter((li) => li.dataset.level === 'crit' || li.dataset.kind === 'member-down');
		return items.length > 0 && bad.length === 0 ? true : items.map((li) => li.textContent).join(' | ');
	})()`)
	idle := b.rate()

	// Load through the leader (the page shows the traffic of the node it is on).
	loadCtx, stopLoad := context.WithCancel(context.Background())
	load := exec.CommandContext(loadCtx, bin.dcctl, "bench", "--server", leader.clientAddr,
		"--duration", "60s", "--concurrency", "4", "--rate", "400", "--sessions", "200")
	var loadOut syncBuffer
	load.Stdout, load.Stderr = &loadOut, &loadOut
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stopLoad()
		load.Wait()
	}()
	b.waitJS(15*time.Second, "requests/s above 20 while the load runs", `(() => {
		const v = +document.getElementById('req-total').dataset.value;
		return v > 20 && document.querySelectorAll('#plot-proto path.line').length > 0 ? true : 'requests/s ' + v;
	})()`)
	first := b.rate()
	b.waitJS(10*time.Second, "requests/s to move", fmt.Sprintf(`+document.getElementById('req-total').dataset.value !== %v || 'still %v'`, first, first))
	t.Logf("requests/s shown: %v idle, %v and then %v under load", idle, first, b.rate())
	b.screenshot(filepath.Join(shots, "load.png"))

	// A crashed follower is reported as down within seconds, by name.
	victim.kill()
	killed := time.Now()
	sel := fmt.Sprintf(`#trouble-list li[data-kind="member-down"][data-member=%q]`, victim.id)
	b.waitJS(10*time.Second, "the member-down warning for "+victim.id, fmt.Sprintf(`(() => {
		const li = document.querySelector(%q);
		const row = document.querySelector('#members-body tr[data-member=%q]');
		return li && li.textContent.includes('is down') && row && row.dataset.down === 'true' ? true :
			[...document.querySelectorAll('#trouble-list li')].map((li) => li.textContent).join(' | ');
	})()`, sel, victim.id))
	t.Logf("member-down warning for %s shown %v after SIGKILL", victim.id, time.Since(killed).Round(100*time.Millisecond))
	b.screenshot(filepath.Join(shots, "member-down.png"))

	// A phone: one column, nothing wider than the screen.
	b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	b.waitJS(5*time.Second, "the page to fit 390 px", `document.documentElement.scrollWidth <= window.innerWidth || 'scrollWidth ' + document.documentElement.scrollWidth`)
	b.screenshot(filepath.Join(shots, "phone.png"))
	b.checkNoScriptErrors()
	t.Logf("screenshots in %s", shots)
}

// lookChromium returns the browser's path. Without one the test skips, unless
// DCINT_REQUIRE_CHROMIUM is set (.ci/run sets it, having installed chromium),
// which makes a missing browser a failure.
func lookChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("DCINT_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium is not installed, but DCINT_REQUIRE_CHROMIUM is set: CI must install it (.ci/run)")
	}
	t.Skip("chromium is not installed: apt-get install chromium to run the status page test (DCINT_REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// browser is one headless Chromium tab and what its page wrote to the console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string // where screenshots go

	mu     sync.Mutex
	errors []string // exceptions, console errors and refused content
}

// openBrowser starts Chromium with a fresh profile and nothing that reaches for
// the network on its own (the test machine's network is closed, and background
// requests would only flood the log with refusals). It is stopped, and its
// profile removed, when the test ends.
func openBrowser(t *testing.T, path, shots string) *browser {
	t.Helper()
	profile := t.TempDir() // removed after the browser has stopped (cleanups run last first)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx, shots: shots}
	// The browser starts here, on a context without a deadline: it lives as long
	// as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// The browser logs every non-2xx answer as a network error: a 503
			// from /readyz is the page's data, not a script error.
			if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
				b.mu.Lock()
				b.errors = append(b.errors, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions with a bound, failing the test on error.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

// waitJS evaluates expr in the page until it returns true, failing the test
// with its last other value after timeout (or at once on a script error).
func (b *browser) waitJS(timeout time.Duration, what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		b.checkNoScriptErrors()
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
		cancel()
		switch {
		case err != nil:
			last = err.Error()
			var ee *chromedp.ExceptionError
			if errors.As(err, &ee) {
				b.t.Fatalf("waiting until %s: the check threw: %v", what, err)
			}
		case string(raw) == "true":
			return
		default:
			last = string(raw)
		}
		if time.Now().After(deadline) {
			b.screenshot(filepath.Join(b.shots, "failed.png"))
			b.t.Fatalf("timed out after %v waiting until %s; the page shows: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rate is the requests/s figure the page shows.
func (b *browser) rate() float64 {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`+document.getElementById('req-total').dataset.value`))
	if err != nil {
		b.t.Fatalf("read requests/s: %v", err)
	}
	return v
}

// screenshot saves the whole page as a PNG.
func (b *browser) screenshot(file string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(file, png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s: %v", file, err)
		return
	}
	b.t.Logf("screenshot: %s (%d bytes)", file, len(png))
}

// checkNoScriptErrors fails the test if the page has shown a script error.
func (b *browser) checkNoScriptErrors() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		b.t.Fatalf("the page shows script errors:\n%s", strings.Join(b.errors, "\n"))
	}
}
