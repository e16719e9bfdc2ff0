package admin

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/llm-proxy/llm-proxy/routing"
	"github.com/llm-proxy/llm-proxy/store"
)

// Semantic routes: a public model whose requests go to the target whose example prompts
// they resemble most (the CLI's `routes semantic`), and a box to try a prompt against
// them without calling any upstream.

type semanticTargetJSON struct {
	Name       string   `json:"name"`
	Model      string   `json:"model"`
	Threshold  float64  `json:"threshold"` // least top-k mean similarity for the target to win
	Utterances []string `json:"utterances"`
}

type semanticRouteJSON struct {
	Model     string               `json:"model"`
	Default   string               `json:"default"`
	TopK      int                  `json:"top_k"`
	Targets   []semanticTargetJSON `json:"targets"`
	UpdatedAt *string              `json:"updated_at"`
}

func toSemanticRouteJSON(r store.SemanticRoute) semanticRouteJSON {
	out := semanticRouteJSON{Model: r.Model, Default: r.Default, TopK: r.TopK, Targets: []semanticTargetJSON{}, UpdatedAt: timePtr(r.UpdatedAt)}
	for _, t := range r.Targets {
		u := t.Utterances
		if u == nil {
			u = []string{}
		}
		out.Targets = append(out.Targets, semanticTargetJSON{Name: t.Name, Model: t.Model, Threshold: t.Threshold, Utterances: u})
	}
	return out
}

func (a *Admin) semanticRouteList(c *call) ([]semanticRouteJSON, error) {
	rs, err := a.st.SemanticRoutes(c.std)
	if err != nil {
		return nil, err
	}
	out := make([]semanticRouteJSON, 0, len(rs))
	for _, r := range rs {
		out = append(out, toSemanticRouteJSON(r))
	}
	return out, nil
}

func (a *Admin) listSemanticRoutes(c *call) {
	out, err := a.semanticRouteList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	c.json(fasthttp.StatusOK, map[string]any{"data": out})
}

// Bounds of a semantic route edit: every utterance is embedded by every worker on each
// change, so the total is kept to what a remote embedder answers quickly.
const (
	maxSemanticTargets    = 32
	maxSemanticUtterances = 200 // per target
	maxUtteranceLen       = 2000
	maxTryPromptLen       = 32 << 10
	semanticTryTime       = 10 * time.Second
)

// putSemanticRoute creates or replaces the semantic route of the path's model.
func (a *Admin) putSemanticRoute(c *call) {
	var v validation
	model := c.pathModel(&v)
	if !v.ok() {
		c.invalid(&v)
		return
	}
	var req struct {
		Default string               `json:"default"`
		TopK    int                  `json:"top_k"` // 0: 3
		Targets []semanticTargetJSON `json:"targets"`
	}
	if !c.decode(&req) {
		return
	}
	r := store.SemanticRoute{Model: model, Default: strings.TrimSpace(req.Default), TopK: req.TopK}
	switch {
	case !validModelName(r.Default):
		v.add("default", "default is required: the public model that takes requests no target matches.")
	case r.Default == model:
		v.add("default", "The default model cannot be the route itself.")
	}
	if r.TopK < 0 || r.TopK > 20 {
		v.add("top_k", "top_k must be from 1 to 20 (0: 3).")
	}
	if len(req.Targets) == 0 || len(req.Targets) > maxSemanticTargets {
		v.add("targets", "A semantic route needs 1 to 32 targets.")
	}
	seen := map[string]bool{}
	for _, t := range req.Targets {
		st := store.SemanticTarget{Name: strings.TrimSpace(t.Name), Model: strings.TrimSpace(t.Model), Threshold: t.Threshold}
		for _, u := range t.Utterances {
			if u = strings.TrimSpace(u); u != "" {
				st.Utterances = append(st.Utterances, u)
			}
		}
		switch {
		case st.Name == "" || len(st.Name) > 100:
			v.add("targets", "Every target needs a name of 1 to 100 characters.")
		case seen[st.Name]:
			v.add("targets", "The target "+st.Name+" is listed twice.")
		case !validModelName(st.Model) || st.Model == model:
			v.add("targets", "The target "+st.Name+" needs a model: a public model name other than the route's.")
		case len(st.Utterances) == 0 || len(st.Utterances) > maxSemanticUtterances:
			v.add("targets", "The target "+st.Name+" needs 1 to 200 example prompts.")
		case math.IsNaN(st.Threshold) || st.Threshold < -1 || st.Threshold > 1.01:
			v.add("targets", "The threshold of "+st.Name+" must be from -1 to 1.01 (a similarity; above 1 disables the target).")
		}
		for _, u := range st.Utterances {
			if len(u) > maxUtteranceLen {
				v.add("targets", "Example prompts are at most 2000 characters.")
			}
		}
		seen[st.Name] = true
		r.Targets = append(r.Targets, st)
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	if err := a.st.PutSemanticRoute(c.std, r); err != nil {
		c.internal(err, a.logger)
		return
	}
	a.logger.Info("semantic route saved", "model", model, "targets", len(r.Targets), "by", c.user.Username)
	list, err := a.semanticRouteList(c)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	for _, sr := range list {
		if sr.Model == model {
			c.json(fasthttp.StatusOK, sr)
			return
		}
	}
	c.notFound("Semantic route") // deleted between the write and the read
}

func (a *Admin) deleteSemanticRoute(c *call) {
	a.deleteByModel(c, "Semantic route", a.st.DeleteSemanticRoute)
}

// semanticScoreJSON is one target's similarity to the tried prompt.
type semanticScoreJSON struct {
	Target    string  `json:"target"`
	Model     string  `json:"model"`
	Score     float64 `json:"score"` // top-k mean similarity of the prompt to the target's examples
	Threshold float64 `json:"threshold"`
	Passes    bool    `json:"passes"` // score >= threshold
}

// semanticTryJSON is what one semantic route would do with the prompt.
type semanticTryJSON struct {
	Route   string              `json:"route"`   // the semantic route's public model
	Matched bool                `json:"matched"` // a target reached its threshold; false: the default takes it
	Target  string              `json:"target"`  // the winning target; "" when the default takes it
	Model   string              `json:"model"`   // where the request would go
	Score   float64             `json:"score"`   // the winner's score, or the best score when none matched
	Reason  string              `json:"reason"`  // as recorded in the request log's route reason
	Scores  []semanticScoreJSON `json:"scores"`
}

// trySemantic embeds a prompt with the worker's embedder and reports, for the named
// semantic route (every route when model is empty), the target it would pick and every
// target's score. It calls no upstream; a remote embedder is called once for the
// prompt and once per example prompt.
func (a *Admin) trySemantic(c *call) {
	var req struct {
		Model  string `json:"model"`
		Prompt string `json:"prompt"`
	}
	if !c.decode(&req) {
		return
	}
	var v validation
	req.Model = strings.TrimSpace(req.Model)
	if strings.TrimSpace(req.Prompt) == "" {
		v.add("prompt", "prompt is required: the text of a user message to route.")
	} else if len(req.Prompt) > maxTryPromptLen {
		v.add("prompt", "prompt must be at most 32 KiB.")
	}
	if !v.ok() {
		c.invalid(&v)
		return
	}
	routes, err := a.st.SemanticRoutes(c.std)
	if err != nil {
		c.internal(err, a.logger)
		return
	}
	if req.Model != "" {
		var one []store.SemanticRoute
		for _, r := range routes {
			if r.Model == req.Model {
				one = append(one, r)
			}
		}
		if len(one) == 0 {
			c.notFound("Semantic route " + req.Model)
			return
		}
		routes = one
	}
	ctx, cancel := context.WithTimeout(c.std, semanticTryTime)
	defer cancel()
	emb := a.embedder()
	vec, err := emb.Embed(ctx, req.Prompt, nil)
	if err != nil {
		c.fail(fasthttp.StatusBadGateway, "upstream_error", "embedder_failed", "", "The embedder failed: "+err.Error())
		return
	}
	out := make([]semanticTryJSON, 0, len(routes))
	for _, sr := range routes {
		rr := routing.SemanticRoute{Model: sr.Model, Default: sr.Default, TopK: sr.TopK}
		for _, t := range sr.Targets {
			rr.Targets = append(rr.Targets, routing.SemanticTarget{Name: t.Name, Model: t.Model, Threshold: float32(t.Threshold), Utterances: t.Utterances})
		}
		router, err := routing.NewSemanticRouter(ctx, rr, emb)
		if err != nil {
			c.fail(fasthttp.StatusBadGateway, "upstream_error", "embedder_failed", "", "The embedder failed: "+err.Error())
			return
		}
		d := router.Decide(vec)
		res := semanticTryJSON{Route: sr.Model, Matched: d.Target != "", Target: d.Target, Model: d.Model, Score: round3(d.Score),
			Reason: d.String(), Scores: []semanticScoreJSON{}}
		for i, sc := range router.Scores(vec, nil) {
			t := sr.Targets[i]
			res.Scores = append(res.Scores, semanticScoreJSON{Target: t.Name, Model: t.Model, Score: round3(sc), Threshold: t.Threshold,
				Passes: sc >= float32(t.Threshold)})
		}
		out = append(out, res)
	}
	c.json(fasthttp.StatusOK, map[string]any{"embedder": emb.ID(), "data": out})
}

func round3(x float32) float64 { return math.Round(float64(x)*1000) / 1000 }
