package secret

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadCreatesKeyFile0600AndReusesIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b1, src, err := Load("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if src != SourceCreated {
		t.Errorf("first Load source = %q, want %q", src, SourceCreated)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("key file mode = %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the key file (temp file left behind?)", len(entries))
	}

	sealed, err := b1.Seal([]byte("sk-provider"))
	if err != nil {
		t.Fatal(err)
	}
	b2, src, err := Load("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if src != SourceFile {
		t.Errorf("second Load source = %q, want %q", src, SourceFile)
	}
	got, err := b2.Open(sealed)
	if err != nil {
		t.Fatalf("box from reused key file cannot open: %v", err)
	}
	if string(got) != "sk-provider" {
		t.Errorf("Open = %q, want %q", got, "sk-provider")
	}
}

func TestLoadConcurrentYieldsOneKey(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	boxes := make([]*Box, n)
	sources := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			boxes[i], sources[i], errs[i] = Load("", dir)
		}()
	}
	close(start)
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Load %d: %v", i, errs[i])
		}
		if sources[i] == SourceCreated {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d loads report creating the key file, want 1", created)
	}
	sealed, err := boxes[0].Seal([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < n; i++ {
		if _, err := boxes[i].Open(sealed); err != nil {
			t.Errorf("box %d holds a different key: %v", i, err)
		}
	}
}

func TestLoadEnvKeyWins(t *testing.T) {
	dir := t.TempDir()
	fileBox, _, err := Load("", dir)
	if err != nil {
		t.Fatal(err)
	}
	envBox, src, err := Load("an-operator-chosen-secret", dir)
	if err != nil {
		t.Fatal(err)
	}
	if src != SourceEnv {
		t.Errorf("source = %q, want %q", src, SourceEnv)
	}
	sealed, err := envBox.Seal([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fileBox.Open(sealed); err == nil {
		t.Error("file key opened a value sealed with the env key; env key was not used")
	}
	envDir := t.TempDir()
	again, _, err := Load("an-operator-chosen-secret", envDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Open(sealed); err != nil {
		t.Errorf("same env key in another process cannot open: %v", err)
	}
	if _, err := os.Stat(filepath.Join(envDir, FileName)); err == nil {
		t.Error("env key load created a key file")
	}
}

func TestKeyFileContentWorksAsEnvKey(t *testing.T) {
	dir := t.TempDir()
	fileBox, _, err := Load("", dir)
	if err != nil {
		t.Fatal(err)
	}
	content, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	envBox, _, err := Load(strings.TrimSpace(string(content)), "")
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := fileBox.Seal([]byte("moved"))
	if got, err := envBox.Open(sealed); err != nil || string(got) != "moved" {
		t.Errorf("env box from file content: Open = %q, %v; want %q", got, err, "moved")
	}
}

func TestLoadRejects(t *testing.T) {
	short := t.TempDir()
	if err := os.WriteFile(filepath.Join(short, FileName), []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		envKey string
		dir    string
	}{
		{"short env key", "15-characters!!", t.TempDir()},
		{"short key file", "", short},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := Load(tt.envKey, tt.dir); err == nil {
				t.Error("Load succeeded, want error")
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	a, err := New("key-material-aaaaaaaa")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New("key-material-bbbbbbbb")
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("sk-live-0123456789")
	s1, err := a.Seal(plain)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := a.Seal(plain)
	if bytes.Equal(s1, s2) {
		t.Error("two seals of the same plaintext are equal; nonce is not random")
	}
	if bytes.Contains(s1, plain) {
		t.Error("sealed value contains the plaintext")
	}
	if got, want := len(s1), 12+len(plain)+16; got != want {
		t.Errorf("sealed length = %d, want %d (nonce || ciphertext || tag)", got, want)
	}
	tampered := bytes.Clone(s1)
	tampered[len(tampered)-1] ^= 1
	var nilBox *Box
	tests := []struct {
		name    string
		box     *Box
		sealed  []byte
		want    string
		wantErr bool
	}{
		{"same key", a, s1, string(plain), false},
		{"other key", b, s1, "", true},
		{"tampered", a, tampered, "", true},
		{"truncated", a, s1[:10], "", true},
		{"nil box", nilBox, s1, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.box.Open(tt.sealed)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Open err = %v, wantErr %v", err, tt.wantErr)
			}
			if string(got) != tt.want {
				t.Errorf("Open = %q, want %q", got, tt.want)
			}
		})
	}
}
