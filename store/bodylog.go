package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"zombiezen.com/go/sqlite"

	"github.com/llm-proxy/llm-proxy/store/spool"
)

// BodyRecord is one request's logged bodies (request_bodies), already redacted and
// truncated by the worker.
type BodyRecord struct {
	RequestID         string `json:"request_id"`
	TsMs              int64  `json:"ts_ms"`
	KeyID             int64  `json:"key_id"`
	Request           string `json:"request"`
	Response          string `json:"response"`
	RequestTruncated  bool   `json:"request_truncated"`
	ResponseTruncated bool   `json:"response_truncated"`
}

// AppendBodyRecord appends r to dst as one JSON line ending in '\n' (json.Marshal
// escapes every control character, so the bodies never break the line).
func AppendBodyRecord(dst []byte, r *BodyRecord) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return dst, fmt.Errorf("store: encode body record: %w", err)
	}
	dst = append(dst, b...)
	return append(dst, '\n'), nil
}

// bodyOffsetPrefix keys body spools in spool_offsets apart from the request spools,
// whose base names ("<worker id>.<seq>") are the same.
const bodyOffsetPrefix = "bodies/"

// maxBodyLine bounds one body record: two bodies of at most a few hundred KiB each
// once escaped. A longer line is corrupt.
const maxBodyLine = 8 << 20

// IngestBodySpools moves the records of the body spool files in dir into
// request_bodies, like IngestSpools does for request records: from the committed
// offset, complete lines only, at most maxBatch rows per fenced transaction with the
// new offset, request_id unique so a replay inserts nothing twice, and a file removed
// once fully read and sealed (or its writer gone).
func (s *Store) IngestBodySpools(ctx context.Context, dir string, epoch int64, maxBatch int) (IngestResult, error) {
	var res IngestResult
	maxBatch = max(maxBatch, 1)
	err := s.eachSpool(ctx, dir, &res, func(path, base string, finished bool) (int, bool, error) {
		return s.ingestBodyFile(ctx, path, bodyOffsetPrefix+base, finished, epoch, maxBatch)
	})
	return res, err
}

func (s *Store) ingestBodyFile(ctx context.Context, path, key string, finished bool, epoch int64, maxBatch int) (rows int, deleted bool, err error) {
	offset, err := s.spoolOffset(ctx, key)
	if err != nil {
		return 0, false, err
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !finished {
		return 0, false, nil // sealed since listed: read under its new name next pass
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: ingest bodies: open: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, false, fmt.Errorf("store: ingest bodies: seek: %w", err)
	}
	br := bufio.NewReaderSize(f, 256<<10)
	for {
		var batch []BodyRecord
		next := offset
		atEOF := false
		for len(batch) < maxBatch {
			if b, _ := br.Peek(1); spool.Padding(b) {
				atEOF = true // the padding after an active file's last line
				break
			}
			line, err := br.ReadBytes('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return rows, false, fmt.Errorf("store: ingest bodies: read: %w", err)
			}
			if errors.Is(err, io.EOF) {
				atEOF = true
				if len(line) > 0 && finished {
					s.logger.Warn("body spool: skipping unterminated last line", "spool", key, "offset", next)
					next += int64(len(line))
				}
				break
			}
			lineOffset := next
			next += int64(len(line))
			var r BodyRecord
			if len(line) > maxBodyLine || json.Unmarshal(line, &r) != nil || r.RequestID == "" {
				s.logger.Warn("body spool: skipping corrupt record", "spool", key, "offset", lineOffset)
				continue
			}
			batch = append(batch, r)
		}
		if next != offset {
			n, err := s.commitBodies(ctx, key, batch, next, epoch)
			if err != nil {
				return rows, false, err
			}
			rows += n
			offset = next
		}
		if atEOF {
			break
		}
	}
	if !finished {
		return rows, false, nil
	}
	if err := s.removeSpool(ctx, path, key, epoch); err != nil {
		return rows, false, err
	}
	return rows, true, nil
}

func (s *Store) commitBodies(ctx context.Context, key string, batch []BodyRecord, next, epoch int64) (int, error) {
	var inserted int
	err := s.writeRetry(ctx, func(conn *sqlite.Conn) error {
		inserted = 0
		if err := checkEpoch(conn, epoch); err != nil {
			return err
		}
		ins := conn.Prep(`INSERT OR IGNORE INTO request_bodies
			(request_id, ts_ms, key_id, request, response, request_truncated, response_truncated)
			VALUES (:rid, :ts, :key, :req, :resp, :rt, :st)`)
		for i := range batch {
			r := &batch[i]
			ins.SetText(":rid", r.RequestID)
			ins.SetInt64(":ts", r.TsMs)
			if r.KeyID == 0 {
				ins.SetNull(":key")
			} else {
				ins.SetInt64(":key", r.KeyID)
			}
			ins.SetText(":req", r.Request)
			ins.SetText(":resp", r.Response)
			ins.SetBool(":rt", r.RequestTruncated)
			ins.SetBool(":st", r.ResponseTruncated)
			if _, err := ins.Step(); err != nil {
				ins.Reset()
				return fmt.Errorf("insert request body: %w", err)
			}
			inserted += conn.Changes()
			if err := ins.Reset(); err != nil {
				return fmt.Errorf("insert request body: %w", err)
			}
		}
		return saveSpoolOffset(conn, key, next)
	})
	if errors.Is(err, ErrFenced) {
		return 0, ErrFenced
	}
	if err != nil {
		return 0, fmt.Errorf("store: ingest bodies: commit: %w", err)
	}
	return inserted, nil
}

// RequestBody returns the logged bodies of requestID; ok is false when none were logged.
func (s *Store) RequestBody(ctx context.Context, requestID string) (r BodyRecord, ok bool, err error) {
	err = s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep(`SELECT ts_ms, COALESCE(key_id, 0), request, response, request_truncated, response_truncated
			FROM request_bodies WHERE request_id = :rid`)
		defer stmt.Reset()
		stmt.SetText(":rid", requestID)
		row, err := stmt.Step()
		if err != nil || !row {
			return err
		}
		ok = true
		r = BodyRecord{RequestID: requestID, TsMs: stmt.ColumnInt64(0), KeyID: stmt.ColumnInt64(1),
			Request: stmt.ColumnText(2), Response: stmt.ColumnText(3),
			RequestTruncated: stmt.ColumnBool(4), ResponseTruncated: stmt.ColumnBool(5)}
		return nil
	})
	if err != nil {
		return r, false, fmt.Errorf("store: request body: %w", err)
	}
	return r, ok, nil
}

// KeyBodyLogOptOuts returns the ids of the keys whose bodies are never logged
// (api_keys.log_bodies = 0).
func (s *Store) KeyBodyLogOptOuts(ctx context.Context) (map[int64]bool, error) {
	out := map[int64]bool{}
	err := s.read(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("SELECT id FROM api_keys WHERE log_bodies = 0")
		defer stmt.Reset()
		for {
			row, err := stmt.Step()
			if err != nil || !row {
				return err
			}
			out[stmt.ColumnInt64(0)] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("store: body log opt-outs: %w", err)
	}
	return out, nil
}

// SetKeyLogBodies sets whether the bodies of key id's requests may be logged.
func (s *Store) SetKeyLogBodies(ctx context.Context, id int64, on bool) error {
	var changed int
	err := s.write(ctx, func(conn *sqlite.Conn) error {
		stmt := conn.Prep("UPDATE api_keys SET log_bodies = :on WHERE id = :id")
		defer stmt.Reset()
		stmt.SetBool(":on", on)
		stmt.SetInt64(":id", id)
		if _, err := stmt.Step(); err != nil {
			return err
		}
		changed = conn.Changes()
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set key log_bodies: %w", err)
	}
	if changed == 0 {
		return fmt.Errorf("store: set key log_bodies: key %d: %w", id, ErrNotFound)
	}
	return nil
}
