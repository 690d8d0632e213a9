// Package ticketkeys hands a ring of TLS session-ticket keys to the TLS servers of
// one host: it renders the ring in each server's own format, writes the files
// atomically (mode 0600, owner configurable), pushes keys to HAProxy's runtime API,
// and runs the operator's reload command. The node calls it whenever its replica of
// the ring changes; tlscache reads the Go format back.
//
// # Keys and formats
//
// A ring key is 80 bytes: a 16-byte key name, a 32-byte HMAC-SHA256 secret and a
// 32-byte AES-256 key, in nginx's 80-byte layout. Every format below was checked
// against the server's documentation and the source that reads it:
//
//   - nginx (ssl_session_ticket_key, ngx_ssl_session_ticket_keys): one file per key,
//     80 bytes read as name | HMAC secret | AES key. The first directive's key
//     encrypts, every listed key decrypts, and nginx refuses to start if a listed
//     file is missing. So the configuration lists a fixed set of files, Dir/nginx.1.key
//     to Dir/nginx.N.key, rewritten in place: 1 is the current key, 2 the next (to
//     nginx merely a key that decrypts, until the rotation makes it file 1), then the
//     past keys, newest first; a ring shorter than N repeats its last key (harmless:
//     nginx looks keys up by name). Keys beyond N are left out, and their tickets
//     stop resuming.
//   - HAProxy (tls-ticket-keys, configuration.txt; ssl_sock_load_tlskeys): one file of
//     base64 lines of 80 bytes, read as name | AES key | HMAC secret (struct
//     tls_sess_key_256: the two secrets in the other order than nginx's). HAProxy
//     keeps the last TLS_TICKETS_NO lines (3 by default, at least that many are
//     required) and encrypts with the penultimate one: "append a new key and
//     reload". So Dir/haproxy.keys lists the past keys oldest first, then the
//     current key, then the next, padded at the front to three lines. With the
//     default build only one past key decrypts. The runtime API's `set ssl tls-key
//     FILE KEY` (management.txt) makes KEY the last key: the former last becomes the
//     encrypting one and the oldest is dropped, which is exactly one rotation; the
//     writer reads `show tls-keys FILE` and pushes only the keys HAProxy lacks.
//   - Apache httpd (SSLSessionTicketKeyFile, mod_ssl; ssl_init_ticket_key): one key
//     only, 48 bytes read as name | 16-byte HMAC secret | 16-byte AES-128 key
//     (derived here from the ring key's name and the first halves of its secrets).
//     Dir/apache.key holds the current key; httpd reads it at start and at a
//     graceful restart, and a ticket whose key name is not that key's resumes
//     nothing (a full handshake). Every rotation therefore ends the tickets issued
//     before it, on every Apache at once.
//   - Go (crypto/tls Config.SetSessionTicketKeys, through tlscache): Dir/go.keys, a
//     comment line naming the ring's generation, then one base64 line per 32-byte
//     Go key, the current first (Go encrypts with the first and tries all). A Go key
//     is SHA-256 of a label and the ring key, so the same secret never serves two
//     ciphers.
//
// # Delivery
//
// Files are replaced atomically (a temporary file in the same directory, fsync,
// rename, fsync of the directory), mode 0600 and owned by Config.Owner, in a
// directory the first delivery creates with mode 0711 (servers running as another
// user reach their file; nobody lists them), and only when their bytes change, so a node that
// restarts with the ring its servers already hold reloads nothing. The reload
// command runs through /bin/sh after a change, with a timeout that kills its whole
// process group, and again at the next delivery while it keeps failing; it gets
// DISTCACHE_TICKET_GENERATION and DISTCACHE_TICKET_DIR in its environment.
//
// # What it must not know
//
// Raft, the cluster and the store: a Ring is just ordered keys. Key bytes never
// appear in a log line, an error or a Delivery; neither does HAProxy's answer to
// `show tls-keys`, which holds them.
package ticketkeys
