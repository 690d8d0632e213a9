// Package manpage writes Unix manual pages (roff with the man macros) for
// dcnode(8) and dcctl(1). The pages are generated from the same tables that
// define the programs' settings and commands, so the manual cannot describe a
// flag that does not exist; the packaging script installs them.
//
// Only the handful of macros a reference page needs are here: title, sections,
// paragraphs, tagged paragraphs and verbatim examples.
//
// It must not know which program it documents: the caller passes the title,
// sections and entries.
package manpage
