package presence

import (
	"errors"
	"testing"
)

// A tiny protobuf writer, to build DiffBatch encodings by hand.
type pb []byte

func (b pb) varint(v uint64) pb {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
func (b pb) u(num int, v uint64) pb { return b.varint(uint64(num)<<3 | 0).varint(v) }
func (b pb) bytes(num int, v []byte) pb {
	return append(b.varint(uint64(num)<<3|2).varint(uint64(len(v))), v...)
}

func TestDecodeDiffBatch(t *testing.T) {
	alice := pb{}.bytes(1, []byte("alice")).u(2, 3).u(3, 1700000000000).u(4, 42).
		bytes(5, pb{}.u(2, 1).u(3, 2))
	gone := pb{}.bytes(1, []byte("gone")).u(6, 1)
	section := pb{}.bytes(1, []byte("team")).u(2, 1).bytes(3, alice).
		bytes(4, pb{}.u(1, 5).u(4, 7))
	// Header, an unknown varint field, a fixed64 and a fixed32 to skip, then
	// users and a topic; then a second encoding concatenated (merge).
	b := pb{}.u(1, 9).u(2, 4).u(3, 1).u(99, 5)
	b = append(b.varint(100<<3|1), 1, 2, 3, 4, 5, 6, 7, 8)
	b = append(b.varint(101<<3|5), 1, 2, 3, 4)
	b = b.bytes(4, alice).bytes(4, gone).bytes(5, section)
	b = b.u(2, 5).bytes(5, pb{}.bytes(1, []byte("big")).bytes(4, pb{}.u(1, 1)).bytes(4, pb{}.u(2, 2)))

	d, err := DecodeDiffBatch(b)
	must(t, err)
	if d.SubscriberID != 9 || d.Sequence != 5 || !d.Snapshot || len(d.Users) != 2 || len(d.Topics) != 2 {
		t.Fatalf("%+v", d)
	}
	a := d.Users[0]
	if a != (UserState{UserID: "alice", State: StateOnline, LastSeenMs: 1700000000000, Version: 42,
		Devices: DeviceSummary{Desktop: 1, Mobile: 2}}) || a.Devices.Total() != 3 {
		t.Fatalf("alice %+v", a)
	}
	if d.Users[1] != (UserState{UserID: "gone", Removed: true}) {
		t.Fatalf("gone %+v", d.Users[1])
	}
	s := d.Topics[0]
	if s.Topic != "team" || !s.Full || len(s.Users) != 1 || s.Users[0].UserID != "alice" ||
		s.Counts == nil || *s.Counts != (TopicCounts{Online: 5, Offline: 7}) || s.Left {
		t.Fatalf("section %+v", s)
	}
	// A sub-message seen twice merges.
	if c := d.Topics[1].Counts; c == nil || *c != (TopicCounts{Online: 1, Away: 2}) {
		t.Fatalf("merged counts %+v", c)
	}
	// The result holds no reference to the input.
	for i := range b {
		b[i] = 0
	}
	if d.Users[0].UserID != "alice" || d.Topics[0].Topic != "team" {
		t.Fatal("the result aliases the input")
	}

	// Empty: an empty batch.
	if d, err := DecodeDiffBatch(nil); err != nil || d.Sequence != 0 || d.Users != nil {
		t.Fatalf("empty: %+v %v", d, err)
	}
	// Malformed inputs: errors, never a panic.
	// (Cuts inside the users field; a cut after the header is a valid message.)
	good := pb{}.u(1, 9).bytes(4, alice)
	for i := 3; i < len(good); i++ {
		if _, err := DecodeDiffBatch(good[:i]); err == nil {
			t.Errorf("truncated at %d: no error", i)
		} else if !errors.Is(err, ErrMalformed) {
			t.Errorf("truncated at %d: %v", i, err)
		}
	}
	for _, bad := range [][]byte{
		{0x08},            // key, no value
		{0x0a, 0x05, 'a'}, // length past the end
		{0x0b},            // wire type 3 (group)
		{0x00, 0x01},      // field 0
		{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, // varint too long
		pb{}.bytes(5, []byte{0x1a, 0x03, 0x0a}),                                  // a broken user inside a topic
	} {
		if _, err := DecodeDiffBatch(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("% x: %v", bad, err)
		}
	}
}

// FuzzDecodeDiffBatch: any input decodes or fails, never panics.
func FuzzDecodeDiffBatch(f *testing.F) {
	f.Add([]byte{0x08, 0x01, 0x22, 0x03, 0x0a, 0x01, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = DecodeDiffBatch(b) })
}
