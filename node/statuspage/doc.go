// Package statuspage is the live status page a node serves at /ui on its admin
// endpoint: one HTML file, a style sheet and a script, embedded in the binary so
// that nothing is fetched from the internet and no build step runs in CI.
//
// # What it owns
//
// The page's assets and the HTTP handler that serves them with headers that
// keep it to itself: a content security policy that allows only its own
// script, style and requests to the same origin, no framing, no caching of a
// stale page after an upgrade.
//
// The page reads what operators and dcctl already read — GET /v1/status,
// /v1/members, /metrics (the Prometheus text, parsed in the browser) and
// /readyz — every second or two, and keeps the history for its plots in the
// browser. So there is one source of truth, and a node does nothing for the
// page while nobody looks at it: no sampling, no buffers, no goroutine. The
// script stops polling while its tab is hidden.
//
// # What it must not know
//
// Anything of the node, the cluster or the store: it has no Go API beyond
// Handler, and the page knows only the admin API's paths and JSON names
// (node/adminapi). It only reads: every call it makes is open without the
// admin token.
package statuspage
