package main

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

type embeddingsResponse struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string    `json:"object"`
		Index     int       `json:"index"`
		Embedding []float32 `json:"embedding"`
	} `json:"data"`
	Usage struct {
		PromptTokens int `json:"prompt_tokens"`
		TotalTokens  int `json:"total_tokens"`
	} `json:"usage"`
}

func embedRequest(t *testing.T, base, body string) embeddingsResponse {
	t.Helper()
	resp, b := do(t, "POST", base+"/v1/embeddings", body, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var got embeddingsResponse
	decodeJSON(t, b, &got)
	return got
}

func TestEmbeddings(t *testing.T) {
	_, base := startServer(t, func(c *config) { c.EmbeddingDim = 8 })
	_, other := startServer(t, func(c *config) { c.EmbeddingDim = 8 })

	tests := []struct {
		name       string
		body       string
		wantN      int
		wantDims   int
		wantTokens int
	}{
		{"string default dims", `{"model":"text-embedding-3-small","input":"hello world"}`, 1, 8, 2},
		{"batch with dims", `{"model":"text-embedding-3-small","input":["hello world","bye"],"dimensions":32}`, 2, 32, 3},
		{"tokens", `{"model":"e","input":[1,2,3]}`, 1, 8, 3},
		{"token batch", `{"model":"e","input":[[1,2,3],[4]]}`, 2, 8, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := embedRequest(t, base, tt.body)
			again := embedRequest(t, other, tt.body) // another process-like instance
			if got.Object != "list" || len(got.Data) != tt.wantN || got.Usage.PromptTokens != tt.wantTokens || got.Usage.TotalTokens != tt.wantTokens {
				t.Fatalf("response = %+v", got)
			}
			for i, d := range got.Data {
				if d.Object != "embedding" || d.Index != i || len(d.Embedding) != tt.wantDims {
					t.Errorf("data[%d]: object %q index %d dims %d, want dims %d", i, d.Object, d.Index, len(d.Embedding), tt.wantDims)
				}
				var sum float64
				for _, x := range d.Embedding {
					sum += float64(x) * float64(x)
				}
				if math.Abs(math.Sqrt(sum)-1) > 1e-5 {
					t.Errorf("data[%d] norm = %v, want 1", i, math.Sqrt(sum))
				}
				if !slices.Equal(d.Embedding, again.Data[i].Embedding) {
					t.Errorf("data[%d] differs between servers for the same input", i)
				}
			}
		})
	}

	a := embedRequest(t, base, `{"model":"e","input":["same","other","same"]}`)
	if !slices.Equal(a.Data[0].Embedding, a.Data[2].Embedding) || slices.Equal(a.Data[0].Embedding, a.Data[1].Embedding) {
		t.Errorf("same input must give the same vector and different inputs different ones: %v", a.Data)
	}
	tok := embedRequest(t, base, `{"model":"e","input":[1,2,3]}`)
	str := embedRequest(t, base, `{"model":"e","input":"1 2 3"}`)
	if !slices.Equal(tok.Data[0].Embedding, str.Data[0].Embedding) {
		t.Errorf("token array [1,2,3] should embed like the string \"1 2 3\"")
	}
}

func TestEmbeddingsBase64(t *testing.T) {
	_, base := startServer(t, nil)
	floats := embedRequest(t, base, `{"model":"e","input":"hello","dimensions":5}`)
	resp, b := do(t, "POST", base+"/v1/embeddings", `{"model":"e","input":"hello","dimensions":5,"encoding_format":"base64"}`, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var got struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	decodeJSON(t, b, &got)
	raw, err := base64.StdEncoding.DecodeString(got.Data[0].Embedding)
	if err != nil || len(raw) != 5*4 {
		t.Fatalf("base64 %q: %v (%d bytes)", got.Data[0].Embedding, err, len(raw))
	}
	dec := make([]float32, 5)
	for i := range dec {
		dec[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[i*4:]))
	}
	if !slices.Equal(dec, floats.Data[0].Embedding) {
		t.Errorf("base64 vector %v != float vector %v", dec, floats.Data[0].Embedding)
	}
}

func TestEmbeddingsErrors(t *testing.T) {
	_, base := startServer(t, nil)
	for _, body := range []string{
		`{"model":"e"}`,
		`{"model":"e","input":[]}`,
		`{"model":"e","input":"x","dimensions":0}`,
		`{"model":"e","input":"x","dimensions":100000000}`,
		`{"model":"e","input":"x","encoding_format":"int8"}`,
		`{"model":"e","input":["x",[1]]}`,
		`{"input":"x"}`,
	} {
		resp, b := do(t, "POST", base+"/v1/embeddings", body, nil)
		var e errorBody
		decodeJSON(t, b, &e)
		if resp.StatusCode != 400 || e.Error == nil || e.Error.Type != "invalid_request_error" {
			t.Errorf("%s: status %d body %s, want 400 invalid_request_error", body, resp.StatusCode, b)
		}
	}
}
