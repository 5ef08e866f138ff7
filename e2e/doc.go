// Package e2e is spomig's end-to-end suite: every test starts the whole local world (internal/dev/stack:
// Azurite ×2, the Key Vault and SPO emulators, the managed-identity endpoint and the local Functions host
// running a freshly built handler) on free ports, and plays users and failures against it through the
// public surfaces only — the HTTP API, the staging container, the Functions host's admin endpoint, the
// emulators' fault knobs and kill -9 of the handler process.
//
// Every test ends with the secrets check (secrets_test.go): no AES key or SAS signature issued during the
// test appears in any log line of any part or in any API response (except the staging upload URL in the
// 201 answer that mints it).
//
// Run with `go test ./e2e/...` (skipped with -short). It needs Azurite (`npm ci`, `make deps`).
package e2e
