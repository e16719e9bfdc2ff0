// Package migrations holds the numbered SQL files that build the schema. It has no
// logic: store applies them in order, once, inside BEGIN IMMEDIATE transactions.
package migrations

import "embed"

// FS holds every migration, named NNNN_description.sql. Files are append-only:
// a released migration is never edited, a change is a new file.
//
//go:embed *.sql
var FS embed.FS
