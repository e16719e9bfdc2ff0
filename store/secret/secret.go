// Package secret holds the process secret (from the environment or a 0600 key file that
// never lives in the database) and seals provider API keys with it, so a copied database
// file alone does not leak them.
package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Sources reported by Load.
const (
	SourceEnv     = "env"     // the envKey argument
	SourceFile    = "file"    // an existing key file
	SourceCreated = "created" // a key file this call created
)

// FileName is the key file inside the data directory.
const FileName = "secret.key"

// MinKeyLen is the shortest accepted key material, in characters.
const MinKeyLen = 16

// domain separates this use of the secret from any other key later derived from it.
const domain = "llm-proxy/secret/aes-256-gcm/v1\x00"

const nonceSize = 12

// Box seals and opens small secrets with AES-256-GCM. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New returns the box for the given key material (at least MinKeyLen characters).
// The AES key is SHA-256 of the material, domain-separated, so any passphrase-like string
// works and the same string always yields the same box.
func New(material string) (*Box, error) {
	if len(material) < MinKeyLen {
		return nil, fmt.Errorf("secret: key material must be at least %d characters, got %d", MinKeyLen, len(material))
	}
	key := sha256.Sum256([]byte(domain + material))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, fmt.Errorf("secret: new cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret: new gcm: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Load returns the box for envKey when it is non-empty; otherwise for dir/secret.key,
// creating that file (mode 0600, 32 random bytes hex-encoded) if it does not exist. It also
// returns which source was used (SourceEnv, SourceFile or SourceCreated).
//
// The file holds the same kind of material as the environment variable, so its content can
// be moved into LLM_PROXY_SECRET_KEY and every sealed value still opens.
func Load(envKey, dir string) (*Box, string, error) {
	if envKey != "" {
		b, err := New(envKey)
		return b, SourceEnv, err
	}
	path := filepath.Join(dir, FileName)
	material, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		created, cerr := createKeyFile(dir, path)
		if cerr != nil {
			return nil, "", cerr
		}
		if created {
			material, err = readKeyFile(path)
			if err != nil {
				return nil, "", err
			}
			b, err := New(material)
			return b, SourceCreated, err
		}
		// Another process won the race; its file is complete (see createKeyFile).
		material, err = readKeyFile(path)
	}
	if err != nil {
		return nil, "", err
	}
	b, err := New(material)
	if err != nil {
		return nil, "", fmt.Errorf("secret: %s: %w", path, err)
	}
	return b, SourceFile, nil
}

func readKeyFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret: read key file: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// createKeyFile writes a new key to a private temporary file and hard-links it into place.
// The link fails if path already exists, so of several processes racing exactly one wins,
// and because the file is complete before it appears, a loser never reads a half-written
// key (a plain O_EXCL create would expose the empty file between open and write).
// It reports whether this call created the file.
func createKeyFile(dir, path string) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("secret: create key directory: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return false, fmt.Errorf("secret: generate key: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".secret.key.*")
	if err != nil {
		return false, fmt.Errorf("secret: create key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	// CreateTemp already uses 0600; Chmod makes that independent of its implementation.
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.WriteString(hex.EncodeToString(raw[:]) + "\n")
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("secret: write key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("secret: install key file: %w", err)
	}
	return true, nil
}

// Seal encrypts plaintext; the result is a random 12-byte nonce followed by the ciphertext
// and tag.
func (b *Box) Seal(plaintext []byte) ([]byte, error) {
	if b == nil {
		return nil, errors.New("secret: seal: no secret key loaded")
	}
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("secret: seal: nonce: %w", err)
	}
	return b.aead.Seal(out, out, plaintext, nil), nil
}

// Open decrypts a value produced by Seal under the same key. It fails when the key differs
// or the value was altered.
func (b *Box) Open(sealed []byte) ([]byte, error) {
	if b == nil {
		return nil, errors.New("secret: open: no secret key loaded")
	}
	if len(sealed) < nonceSize+b.aead.Overhead() {
		return nil, fmt.Errorf("secret: open: sealed value too short (%d bytes)", len(sealed))
	}
	plain, err := b.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], nil)
	if err != nil {
		return nil, fmt.Errorf("secret: open: wrong key or corrupted value: %w", err)
	}
	return plain, nil
}
