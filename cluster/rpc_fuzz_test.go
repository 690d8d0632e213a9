package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func encodeFrame(f frame) []byte {
	b := []byte{f.typ}
	b = binary.BigEndian.AppendUint64(b, f.id)
	b = binary.BigEndian.AppendUint32(b, f.aux)
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.payload)))
	return append(b, f.payload...)
}

// FuzzReadFrame feeds arbitrary bytes to the forwarding RPC decoder: it must
// never panic or allocate beyond the frame limit, every frame it accepts must
// re-encode (through the real frame writer) to exactly the bytes it consumed,
// and it must stop at the first malformed frame.
func FuzzReadFrame(f *testing.F) {
	f.Add(encodeFrame(frame{typ: rpcPropose, id: 1, aux: 2000, payload: []byte("cmd")}))
	f.Add(append(encodeFrame(frame{typ: rpcReadIndex, id: 7, aux: 100}), encodeFrame(frame{typ: respOK, id: 7, payload: make([]byte, 8)})...))
	f.Add(encodeFrame(frame{typ: respErr, id: 9, aux: codeNotLeader, payload: []byte("remote: not the leader")}))
	f.Add([]byte{rpcPropose, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3, 232, 0xff, 0xff, 0xff, 0xff}) // oversized
	f.Add([]byte{rpcQuery, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 3, 232, 0, 0, 0, 10, 'a'})         // truncated
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		consumed := 0
		for {
			fr, err := readFrame(r)
			if err != nil {
				if errors.Is(err, io.EOF) && consumed != len(data) {
					t.Fatalf("clean EOF after %d of %d bytes", consumed, len(data))
				}
				return
			}
			if len(fr.payload) > maxFrame {
				t.Fatalf("accepted a %d-byte payload", len(fr.payload))
			}
			var out bytes.Buffer
			c1, c2 := net.Pipe()
			fw := newFrameWriter(c1)
			done := make(chan error, 1)
			go func() { _, err := io.Copy(&out, c2); done <- err }()
			if err := fw.write(fr, time.Now().Add(5*time.Second)); err != nil {
				t.Fatal(err)
			}
			c1.Close()
			<-done
			c2.Close()
			n := frameHeader + len(fr.payload)
			if !bytes.Equal(out.Bytes(), data[consumed:consumed+n]) {
				t.Fatalf("frame %+v re-encodes differently", fr)
			}
			consumed += n
		}
	})
}
