package extauthz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/authgate/authgate/internal/config"
)

// TestKeepalivePolicyAcceptsIdlePings holds one HTTP/2 connection the way Envoy does (envoy.yaml's connection_keepalive):
// no Check in flight, a PING every so often. Against the policy Start gives the server, with its MinTime shortened to 1 s so
// the test is quick, a client pinging no more often than that keeps its connection (no GOAWAY) and a Check sent on it at the
// end is answered. The control runs the same client against grpc-go's default policy, which is what extauthz had: GOAWAY
// too_many_pings after a few pings.
func TestKeepalivePolicyAcceptsIdlePings(t *testing.T) {
	const minTime = time.Second
	// The server measures the gap between pings from when it handles each one; the margin keeps scheduling noise on a busy
	// machine from making a ping look early. Envoy's own margin is much larger (30 s pings against 10 s).
	const every = minTime + minTime/4
	policy := keepaliveEnforcement
	policy.MinTime = minTime

	t.Run("extauthz policy", func(t *testing.T) {
		t.Parallel()
		c := dialH2(t, startKeepaliveServer(t, serverOptions(config.Extauthz{}, policy)...))
		for i := range 8 { // the default policy sends GOAWAY at the fourth idle ping
			if err := c.ping(uint64(i)); err != nil {
				t.Fatalf("ping %d: %v", i+1, err)
			}
			time.Sleep(every)
		}
		if err := c.check(); err != nil {
			t.Fatalf("a Check on the pinged connection: %v", err)
		}
	})
	t.Run("grpc-go default policy", func(t *testing.T) {
		t.Parallel()
		c := dialH2(t, startKeepaliveServer(t))
		var err error
		for i := 0; i < 8 && err == nil; i++ {
			if err = c.ping(uint64(i)); err == nil {
				time.Sleep(every)
			}
		}
		var goAway *goAwayError
		if !errors.As(err, &goAway) || goAway.code != http2.ErrCodeEnhanceYourCalm || goAway.debug != "too_many_pings" {
			t.Fatalf("after idle pings every %v: %v; want GOAWAY ENHANCE_YOUR_CALM too_many_pings", every, err)
		}
	})
}

// TestKeepalivePolicyIsEnvoys pins the production policy: pings without a Check in flight are allowed, and at least three
// times as often as Envoy sends them (deploy/ checks envoy.yaml's interval against KeepaliveMinTime).
func TestKeepalivePolicyIsEnvoys(t *testing.T) {
	if !keepaliveEnforcement.PermitWithoutStream {
		t.Error("pings without a Check in flight must be allowed: Envoy pings idle connections")
	}
	if keepaliveEnforcement.MinTime != KeepaliveMinTime || KeepaliveMinTime > 10*time.Second {
		t.Errorf("MinTime %v (KeepaliveMinTime %v): want at most 10 s, a third of Envoy's 30 s", keepaliveEnforcement.MinTime,
			KeepaliveMinTime)
	}
}

// startKeepaliveServer serves Checks (all allowed) with opts and returns the address.
func startKeepaliveServer(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := NewGRPCServer(opts...)
	NewServer(fixedChecker{Allow: true}, slog.New(slog.DiscardHandler), 0).Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// h2Conn is a bare HTTP/2 client connection. A gRPC client would hide a GOAWAY behind a reconnect (and refuses to ping
// more often than every 10 s); this one reports it.
type h2Conn struct {
	t      *testing.T
	addr   string
	wmu    sync.Mutex
	fr     *http2.Framer
	events chan h2Event
}

// h2Event is what the read loop saw: a PING ack, a DATA or HEADERS frame of a stream, or the end of the connection.
type h2Event struct {
	ack       bool
	stream    uint32
	data      []byte
	endStream bool
	err       error // GOAWAY (a *goAwayError) or a read error: the connection is over
}

type goAwayError struct {
	code  http2.ErrCode
	debug string
}

func (e *goAwayError) Error() string { return fmt.Sprintf("GOAWAY %v %q", e.code, e.debug) }

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &h2Conn{t: t, addr: addr, fr: http2.NewFramer(nc, nc), events: make(chan h2Event, 64)}
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c.write(func() error { return c.fr.WriteSettings() })
	go c.read()
	return c
}

func (c *h2Conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := f(); err != nil {
		c.t.Errorf("writing a frame: %v", err)
	}
}

func (c *h2Conn) read() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.events <- h2Event{err: err}
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WriteSettingsAck() })
			}
		case *http2.PingFrame:
			if f.IsAck() {
				c.events <- h2Event{ack: true}
			} else {
				c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.GoAwayFrame:
			c.events <- h2Event{err: &goAwayError{code: f.ErrCode, debug: string(f.DebugData())}}
			return
		case *http2.DataFrame:
			c.events <- h2Event{stream: f.StreamID, data: bytes.Clone(f.Data()), endStream: f.StreamEnded()}
		case *http2.HeadersFrame:
			c.events <- h2Event{stream: f.StreamID, endStream: f.StreamEnded()}
		}
	}
}

// next waits for the read loop's next event; the connection ending is an error.
func (c *h2Conn) next() (h2Event, error) {
	select {
	case e := <-c.events:
		return e, e.err
	case <-time.After(10 * time.Second):
		return h2Event{}, errors.New("no frame from the server in 10 s")
	}
}

// ping sends a PING and waits for its ack.
func (c *h2Conn) ping(n uint64) error {
	var data [8]byte
	binary.BigEndian.PutUint64(data[:], n)
	c.write(func() error { return c.fr.WritePing(false, data) })
	for {
		e, err := c.next()
		if err != nil || e.ack {
			return err
		}
	}
}

// check sends one Check on stream 1 and expects an allow.
func (c *h2Conn) check() error {
	msg, err := proto.Marshal(envoyRequest("GET", "/openapi/v1/me", map[string]string{":path": "/openapi/v1/me"}, "10.0.0.1"))
	if err != nil {
		return err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", authv3.Authorization_Check_FullMethodName},
		{":authority", c.addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			return err
		}
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) // uncompressed, then the length
	c.write(func() error {
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	})
	c.write(func() error { return c.fr.WriteData(1, true, append(frame, msg...)) })
	var body []byte
	for {
		e, err := c.next()
		if err != nil {
			return err
		}
		if e.stream != 1 {
			continue
		}
		body = append(body, e.data...)
		if e.endStream {
			break
		}
	}
	if len(body) < 5 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
		return fmt.Errorf("response body %x is not one gRPC message", body)
	}
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(body[5:], &resp); err != nil {
		return err
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
		return fmt.Errorf("want an allow, got %v", &resp)
	}
	return nil
}
