package main

import (
	"context"
	"errors"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAISDK checks that the official Go SDK parses what mockllm sends:
// the shapes users' clients will see through the gateway.
func TestOpenAISDK(t *testing.T) {
	_, base := startServer(t, nil)
	client := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("sk-test"), option.WithMaxRetries(0))
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
	}

	got, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Choices[0].Message.Content != defaultReply || got.Usage.PromptTokens != 5 || got.Usage.CompletionTokens != 10 {
		t.Errorf("chat = %q usage %+v", got.Choices[0].Message.Content, got.Usage)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != defaultReply || acc.Usage.TotalTokens != 15 {
		t.Errorf("accumulated = %+v usage %+v", acc.Choices, acc.Usage)
	}

	for _, format := range []openai.EmbeddingNewParamsEncodingFormat{openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64} {
		emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model:          "text-embedding-3-small",
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
			Dimensions:     openai.Int(12),
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatalf("embeddings %s: %v", format, err)
		}
		if len(emb.Data) != 2 || len(emb.Data[1].Embedding) != 12 {
			t.Errorf("embeddings %s = %+v", format, emb.Data)
		}
	}

	_, err = client.Chat.Completions.New(ctx, params, option.WithHeader("X-Mock-Fault", "status=429,retry_after=1"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != "requests" {
		t.Errorf("429 fault: err = %v", err)
	}
}
