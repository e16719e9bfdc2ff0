package main

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"math"
	"net/http"
	"strconv"
)

// embed returns a deterministic unit vector for text: the FNV-1a hash of
// the text seeds a splitmix64 sequence whose outputs, mapped to [-1, 1), are
// normalised. Same text and dims, same vector, in every process.
func embed(text string, dims int) []float32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(text)) // hash.Hash.Write never fails
	state := h.Sum64()
	v := make([]float32, dims)
	var norm float64
	f := make([]float64, dims)
	for i := range f {
		// splitmix64: a tiny, well-mixed generator; good enough to spread
		// vectors for similarity tests.
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		f[i] = float64(z>>11)/(1<<53)*2 - 1
		norm += f[i] * f[i]
	}
	norm = math.Sqrt(norm)
	if norm == 0 {
		v[0] = 1
		return v
	}
	for i := range f {
		v[i] = float32(f[i] / norm)
	}
	return v
}

func (s *server) serveEmbeddings(c *call) {
	dims := c.req.dims
	if dims == 0 {
		dims = s.cfg.EmbeddingDim
	}
	b := append([]byte(nil), `{"object":"list","data":[`...)
	var raw []byte
	for i, in := range c.req.inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = appendInt(b, int64(i))
		b = append(b, `,"embedding":`...)
		v := embed(in, dims)
		if c.req.base64 {
			// The OpenAI SDKs ask for base64 by default: little-endian
			// float32s, base64-encoded.
			raw = raw[:0]
			for _, x := range v {
				raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(x))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, x := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(x), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendString(b, c.req.model)
	b = append(b, ',')
	b = appendUsage(b, c.req.promptTokens, 0, false)
	b = append(b, '}')
	c.send(http.StatusOK, hdrJSON, b)
}
