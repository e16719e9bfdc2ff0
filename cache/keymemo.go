package cache

import (
	"bytes"
	"hash/maphash"
	"sync/atomic"
)

// Size of the key memo: how many bodies it remembers, and the largest it takes. At most
// keyMemoSlots × keyMemoMaxBody bytes (4 MiB) of bodies per process, allocated only as
// requests fill it.
const (
	keyMemoSlots   = 1024 // a power of two
	keyMemoMaxBody = 4 << 10
)

// keyMemo remembers the keys of recent request bodies, byte for byte, so that a repeated
// request (the usual exact-cache hit: the same client sending the same prompt) skips the
// canonicalisation, which is most of a key's cost. It is a direct-mapped table of
// immutable entries behind atomic pointers: lookups take no lock, and a collision just
// replaces the slot. An entry is used only when namespace, endpoint, model and every
// byte of the body match, so it returns exactly what NewKey would.
type keyMemo struct {
	seed  maphash.Seed
	slots [keyMemoSlots]atomic.Pointer[keyMemoEntry]
}

type keyMemoEntry struct {
	namespace, endpoint, model string
	body                       []byte
	key                        Key
}

func newKeyMemo() *keyMemo { return &keyMemo{seed: maphash.MakeSeed()} }

// key is NewKey(string(namespace), endpoint, model, body), from the memo when it can.
func (m *keyMemo) key(namespace []byte, endpoint, model string, body []byte) (Key, error) {
	if len(body) > keyMemoMaxBody {
		return NewKey(string(namespace), endpoint, model, body)
	}
	slot := &m.slots[maphash.Bytes(m.seed, body)&(keyMemoSlots-1)]
	if e := slot.Load(); e != nil && e.model == model && e.endpoint == endpoint &&
		e.namespace == string(namespace) && bytes.Equal(e.body, body) {
		return e.key, nil
	}
	k, err := NewKey(string(namespace), endpoint, model, body)
	if err != nil {
		return k, err
	}
	slot.Store(&keyMemoEntry{namespace: string(namespace), endpoint: endpoint, model: model,
		body: bytes.Clone(body), key: k})
	return k, nil
}
