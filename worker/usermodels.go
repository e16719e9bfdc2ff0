package worker

import (
	"context"
	"fmt"
)

// loadKeyExtras adds to a fresh key snapshot what ListAPIKeys does not carry: the
// owning users' model allow-lists and the keys' body-logging opt-outs. Two small
// reads, only when the keys (or users' lists) changed.
func (w *Worker) loadKeyExtras(ctx context.Context, s *keySnapshot) error {
	users, err := w.deps.Store.UserModels(ctx)
	if err != nil {
		return fmt.Errorf("worker: load user models: %w", err)
	}
	var optOut map[int64]bool
	if w.cfg.LogBodies {
		if optOut, err = w.deps.Store.KeyBodyLogOptOuts(ctx); err != nil {
			return fmt.Errorf("worker: load body log opt-outs: %w", err)
		}
	}
	// One set per user, shared by the user's keys.
	sets := make(map[int64]*modelSet, len(users))
	for id, ms := range users {
		sets[id] = newModelSet(ms)
	}
	for i := range s.entries {
		e := &s.entries[i]
		e.noBodies = optOut[e.id]
		if e.userID != 0 {
			e.userModels = sets[e.userID]
		}
	}
	return nil
}

// userAllows reports whether the key's owner may use model (no list: every model).
func (k *keyEntry) userAllows(model []byte) bool { return k.userModels.has(model) }

// allowsName is allows and userAllows for a model name.
func (k *keyEntry) allowsName(model string) bool {
	return k.allows([]byte(model)) && k.userAllows([]byte(model))
}
