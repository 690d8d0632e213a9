// Package syncbuf is a bytes.Buffer that concurrent writers (a server's
// logger, a proxy's output, a child process's stdout and stderr) and the test
// reading it can share.
//
// It must not know who writes or why; it is imported only by tests.
package syncbuf
