package e2e

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

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/openai/openai-go/v3"
)

// browserTimeout bounds the whole browser scenario; each wait inside it is shorter.
const browserTimeout = 3 * time.Minute

// chromiumPath finds Debian's chromium (scripts/install-test-deps.sh installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("LLM_PROXY_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: run scripts/install-test-deps.sh (Debian package chromium) or set LLM_PROXY_CHROMIUM")
	return ""
}

// artifactDir is where screenshots go: $LLM_PROXY_TEST_ARTIFACTS/<test> when set, so CI
// can keep them, else a temporary folder.
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if base := os.Getenv("LLM_PROXY_TEST_ARTIFACTS"); base != "" {
		dir = filepath.Join(base, t.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestAdminBrowser drives the web admin in headless Chromium the way an operator would:
// first sign-in with the default admin, the forced password change, an upstream pointing
// at mockllm, a key used with the OpenAI SDK, the request in the logs and on the dashboard,
// revocation (the next call fails with 401), key limits, a route, a price override, a cache
// purge and sign-out. Every page is screenshotted.
func TestAdminBrowser(t *testing.T) {
	chrome := chromiumPath(t)
	mock := startMock(t)
	g := newGateway(t, nil)
	// A semantic route for the routes page's "try a prompt" box (its targets need no
	// upstream: trying a prompt only embeds it).
	g.cli(t, "routes", "semantic", "set", "--model", "browser-auto", "--default", "browser-model",
		"--target", "code=coder-model,threshold=0.3", "--target", "billing=support-model,threshold=0.3",
		"--utterances-file", semanticTestdata(t, "utterances.json"))
	g.start(t)
	shots := artifactDir(t)
	base := "http://" + g.addr()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	defer cancelCtx()

	// Collect CSP violations and script errors (the pages must work under the strict CSP),
	// and confirm every dialog (revoking asks first). Subscribing starts the browser.
	var (
		mu       sync.Mutex
		problems []string
	)
	note := func(s string) { mu.Lock(); problems = append(problems, s); mu.Unlock() }
	entries := chromedp.Events(ctx, log.EntryAdded)
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for e, err := range entries {
			if err != nil {
				return
			}
			if strings.Contains(e.Entry.Text, "Content Security Policy") || (e.Entry.Level == log.EntryLevelError && e.Entry.Source == log.EntrySourceJavascript) {
				note(e.Entry.Text)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for e, err := range exceptions {
			if err != nil {
				return
			}
			note((&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
		}
	}()
	go func() {
		defer wg.Done()
		for _, err := range dialogs {
			if err != nil {
				return
			}
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true}); err != nil {
				note("accept dialog: " + err.Error())
			}
		}
	}()
	// The browser stops first, which ends the subscriptions.
	defer wg.Wait()
	defer cancelCtx()
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	deadline := time.Now().Add(browserTimeout)
	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			shot(t, bctx, shots, "failed-"+strings.ReplaceAll(what, " ", "-"))
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	n := 0
	screenshot := func(name string) {
		t.Helper()
		n++
		shot(t, bctx, shots, fmt.Sprintf("%02d-%s", n, name))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// 1. Sign in with the default admin; the admin insists on a new password.
	run("open login", chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(css("#login-form")))
	screenshot("login")
	run("sign in", chromedp.SendKeys(css("#username"), "admin"), chromedp.SendKeys(css("#password"), "admin123"),
		chromedp.Click(css("#login-form button[type=submit]")), chromedp.WaitVisible(css("#password-form")))
	screenshot("forced-password-change")
	const newPassword = "browser-admin-password-1"
	run("change password", chromedp.SendKeys(css("#current"), "admin123"), chromedp.SendKeys(css("#new"), newPassword),
		chromedp.SendKeys(css("#confirm"), newPassword), chromedp.Click(css("#password-form button[type=submit]")), chromedp.WaitVisible(css("#total-requests")))
	before := text("#total-requests")
	screenshot("dashboard-empty")

	// 2. An upstream pointing at mockllm, tested from the page.
	run("add upstream", chromedp.Navigate(base+"/upstreams"), chromedp.WaitVisible(css("#add-upstream")), chromedp.Click(css("#add-upstream")),
		chromedp.WaitVisible(css("#upstream-form")), chromedp.SendKeys(css("#up-name"), "mock"), chromedp.SendKeys(css("#up-base"), mock.baseURL()))
	screenshot("upstream-form")
	run("save upstream", chromedp.Click(css("#save-upstream")))
	waitText(t, bctx, "#upstreams-table", mock.baseURL())
	run("test upstream", chromedp.Click(css("#upstreams-table button[data-id]")))
	waitText(t, bctx, "#test-result", "Connection OK")
	// The health and circuit columns: the circuit as the serving worker sees it, the
	// active probe's verdict.
	if c := text("#upstreams-table td.circuit"); !strings.Contains(c, "closed") {
		t.Errorf("circuit cell = %q, want a closed circuit", c)
	}
	if hc := text("#upstreams-table td.health"); !strings.Contains(hc, "healthy") && !strings.Contains(hc, "not probed") {
		t.Errorf("health cell = %q", hc)
	}
	screenshot("upstreams")

	// 3. A key, shown once, used with the OpenAI SDK.
	run("create key", chromedp.Navigate(base+"/keys"), chromedp.WaitVisible(css("#new-key")), chromedp.Click(css("#new-key")),
		chromedp.WaitVisible(css("#key-form")), chromedp.SendKeys(css("#key-name"), "browser-key"), chromedp.Click(css("#create-key")),
		chromedp.WaitVisible(css("#new-key-value")))
	key := text("#new-key-value")
	if !strings.HasPrefix(key, "sk-") {
		t.Fatalf("the page shows %q as the new key", key)
	}
	screenshot("key-created")
	run("copy key", chromedp.Click(css("#copy-key")))
	waitText(t, bctx, "#copy-key", "Copied")

	client := g.sdk(key, nil)
	prompt := marker(t)
	until := time.Now().Add(10 * time.Second)
	for {
		// The workers pick up the new key and upstream within a second.
		c, err := client.Chat.Completions.New(bctx, chatParams("browser-model", prompt))
		if err == nil {
			if len(c.Choices) == 0 {
				t.Fatalf("empty completion: %+v", c)
			}
			break
		}
		if time.Now().After(until) {
			t.Fatalf("chat with the new key: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 4. The request appears in the logs and moves the dashboard counter.
	pollPage(t, bctx, base+"/logs", "#logs-table", func(s string) bool { return strings.Contains(s, "browser-model") }, recordTimeout)
	screenshot("logs")
	run("open the log detail", chromedp.Click(css("#logs-table .log-row a")), chromedp.WaitVisible(css("dl.detail")))
	screenshot("log-detail")
	pollPage(t, bctx, base+"/dashboard", "#total-requests", func(s string) bool { return strings.TrimSpace(s) != strings.TrimSpace(before) }, 30*time.Second)
	screenshot("dashboard")
	run("phone width", chromedp.EmulateViewport(390, 844), chromedp.Reload(), chromedp.WaitVisible(css("#total-requests")))
	screenshot("dashboard-phone")
	run("laptop width", chromedp.EmulateViewport(1280, 900))

	// 5. Revoke the key: the next call fails with 401.
	run("revoke", chromedp.Navigate(base+"/keys"), chromedp.WaitVisible(css("#keys-table")), chromedp.Click(css("#keys-table button.revoke")))
	waitText(t, bctx, "#keys-table .key-state", "revoked")
	screenshot("key-revoked")
	until = time.Now().Add(5 * time.Second)
	for {
		_, err := client.Chat.Completions.New(bctx, chatParams("browser-model", prompt))
		var apiErr *openai.Error
		if errors.As(err, &apiErr) && apiErr.StatusCode == 401 {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("a call with the revoked key: %v, want 401", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// 6. Limits on a key, a route, a price override and a cache purge, each through its form.
	run("edit key limits", chromedp.Click(css("#keys-table button.edit-limits")), chromedp.WaitVisible(css("#limits-form")),
		chromedp.SendKeys(css("#edit-rpm"), "120"), chromedp.SendKeys(css("#edit-budget"), "5"))
	screenshot("key-limits-form")
	run("save key limits", chromedp.Click(css("#save-limits")))
	waitText(t, bctx, "#keys-table td.limits", "120 req/min")
	screenshot("keys-with-limits")
	run("configure a route", chromedp.Navigate(base+"/routes"), chromedp.WaitVisible(css("#add-route")), chromedp.Click(css("#add-route")),
		chromedp.WaitVisible(css("#route-form")), chromedp.SendKeys(css("#route-model"), "browser-model"),
		chromedp.SendKeys(css("#route-fallbacks"), "browser-fallback"))
	screenshot("route-form")
	run("save route", chromedp.Click(css("#save-route")))
	waitText(t, bctx, "#routes-table", "browser-fallback")
	screenshot("routes")
	run("try a prompt", chromedp.WaitVisible(css("#try-form")), chromedp.SendKeys(css("#try-prompt"), "please fix this bug in my go code"),
		chromedp.Click(css("#try-run")))
	waitText(t, bctx, "#try-result", "browser-auto → coder-model (target code")
	screenshot("semantic-try")
	run("override a price", chromedp.Navigate(base+"/prices"), chromedp.WaitVisible(css("#add-price")), chromedp.Click(css("#add-price")),
		chromedp.WaitVisible(css("#price-form")), chromedp.SendKeys(css("#price-model"), "browser-model"),
		chromedp.SendKeys(css("#price-input"), "1.5"), chromedp.SendKeys(css("#price-output"), "3"), chromedp.Click(css("#save-price")))
	waitText(t, bctx, "#prices-table", "browser-model")
	screenshot("prices")
	run("purge the cache", chromedp.Navigate(base+"/cache"), chromedp.WaitVisible(css("#cache-table")), chromedp.Click(css("#purge-all")))
	waitText(t, bctx, "#purge-result", "Purged")
	screenshot("cache")

	// 7. The other pages, then sign out.
	for _, p := range []struct{ path, sel string }{{"/users", "main table"}, {"/workers", "#workers-table"}, {"/settings", "#settings-table"}, {"/help", "article.help"}} {
		run("open "+p.path, chromedp.Navigate(base+p.path), chromedp.WaitVisible(css(p.sel)))
		screenshot(strings.TrimPrefix(p.path, "/"))
	}
	run("sign out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#login-form")))
	run("signed out", chromedp.Navigate(base+"/keys"), chromedp.WaitVisible(css("#login-form")))
	screenshot("signed-out")

	mu.Lock()
	for _, p := range problems {
		t.Errorf("browser console: %s", p)
	}
	mu.Unlock()
	t.Logf("screenshots in %s", shots)
}

// shot saves a full-page PNG screenshot as dir/name.png.
func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Errorf("write screenshot: %v", err)
	}
}

// waitText waits until the text of sel contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err == nil && strings.Contains(s, want) {
			return
		}
		last = s
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q (last text %q, error %v)", sel, want, last, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pollPage loads url until the text of sel satisfies ok.
func pollPage(t *testing.T, ctx context.Context, url, sel string, ok func(string) bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("load %s: %v", url, err)
		}
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s never changed as expected within %s (last %q)", url, sel, within, s)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
