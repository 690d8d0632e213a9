// Package testpki issues certificates for tests: a throwaway CA and leaf
// certificates for loopback servers and clients, in memory or as PEM files for
// programs that take file names (dcnode, dcctl, Apache, stunnel).
//
// It must not know the programs that use the files or the cluster's own certificate rules; it is imported only by tests.
package testpki
