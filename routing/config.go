package routing

import "fmt"

// Strategy names accepted by LLM_PROXY_LOAD_BALANCE_STRATEGY and per route.
const (
	RoundRobin       = "round_robin"
	Weighted         = "weighted"
	LeastConnections = "least_connections"
	ConversationHash = "conversation_hash"
)

// Strategies lists every strategy name, in the order the help text shows them.
var Strategies = []string{RoundRobin, Weighted, LeastConnections, ConversationHash}

// Config holds the routing settings read from the environment.
type Config struct {
	Strategy            string `envconfig:"LOAD_BALANCE_STRATEGY" default:"weighted" desc:"default balancing strategy: round_robin, weighted, least_connections or conversation_hash"`
	HealthCheckEnabled  bool   `envconfig:"HEALTH_CHECK_ENABLED" default:"true" desc:"probe upstreams periodically (primary worker only)"`
	HealthCheckInterval int    `envconfig:"HEALTH_CHECK_INTERVAL" default:"60" desc:"seconds between upstream health checks (primary worker only)"`
	HealthCheckTimeout  int    `envconfig:"HEALTH_CHECK_TIMEOUT" default:"10" desc:"seconds one upstream health check may take"`
}

// Validate reports the first invalid field, naming its environment variable and
// the values it accepts.
func (c Config) Validate() error {
	if !validStrategy(c.Strategy) {
		return fmt.Errorf("LLM_PROXY_LOAD_BALANCE_STRATEGY=%q is invalid: accepted values are round_robin, weighted, least_connections, conversation_hash", c.Strategy)
	}
	if c.HealthCheckInterval < 1 {
		return fmt.Errorf("LLM_PROXY_HEALTH_CHECK_INTERVAL=%d is invalid: must be a whole number of seconds >= 1", c.HealthCheckInterval)
	}
	if c.HealthCheckTimeout < 1 {
		return fmt.Errorf("LLM_PROXY_HEALTH_CHECK_TIMEOUT=%d is invalid: must be a whole number of seconds >= 1", c.HealthCheckTimeout)
	}
	return nil
}

func validStrategy(s string) bool {
	for _, v := range Strategies {
		if s == v {
			return true
		}
	}
	return false
}
