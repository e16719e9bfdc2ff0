//go:build !unix

package supervisor

import (
	"context"
	"errors"
	"net"

	"github.com/hashicorp/go-hclog"
)

// errUnsupported: worker processes need SO_REUSEPORT and inherited file
// descriptors, which this system does not offer.
var errUnsupported = errors.New("supervisor: worker processes need a Unix system")

// Supervisor is not available on this system; New always fails.
type Supervisor struct{}

// New fails on this system.
func New(cfg Config, opts Options, logger hclog.Logger) (*Supervisor, error) {
	return nil, errUnsupported
}

func (s *Supervisor) Run(ctx context.Context) error  { return errUnsupported }
func (s *Supervisor) Roll(ctx context.Context) error { return errUnsupported }
func (s *Supervisor) Addr() net.Addr                 { return nil }
func (s *Supervisor) Ready() <-chan struct{}         { return nil }
func (s *Supervisor) Workers() []WorkerInfo          { return nil }
