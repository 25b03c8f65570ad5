package presence

import (
	"errors"
	"fmt"
)

// DiffBatch is what a subscriber receives (presence.v1.DiffBatch): a small
// per-subscriber header, the users it watches directly, and one section per
// topic with news.
type DiffBatch struct {
	SubscriberID SubscriberID
	Sequence     uint64 // the cursor for Resume: grows by one per batch
	Snapshot     bool   // the batch holds the whole interest set and replaces the view
	Users        []UserState
	Topics       []TopicSection
}

// UserState is one user in a snapshot or a diff (presence.v1.UserState).
type UserState struct {
	UserID     string
	State      State
	LastSeenMs int64
	Version    uint64
	Devices    DeviceSummary
	// Set (and nothing else but UserID) when the user left this stream.
	Removed bool
}

// TopicSection is the part of a batch that comes from one topic
// (presence.v1.TopicSection).
type TopicSection struct {
	Topic  string
	Full   bool // Users (or Counts) is the whole topic, replacing what was held
	Users  []UserState
	Counts *TopicCounts // set in counts-only mode (no Users then)
	Left   bool         // the subscriber left this topic
}

// TopicCounts is the occupancy of a large topic in counts-only mode.
type TopicCounts struct {
	Online, Away, DND, Offline uint32
}

// ErrMalformed is returned (wrapped) by DecodeDiffBatch for bytes that are
// not a valid encoding.
var ErrMalformed = errors.New("presence: malformed protobuf")

// DecodeDiffBatch decodes an encoded presence.v1.DiffBatch, as protobuf
// would: repeated fields append, scalars keep the last value, and a
// sub-message seen twice is merged (the batch is a concatenation of
// encodings). Unknown fields are skipped. The result holds no reference to b.
func DecodeDiffBatch(b []byte) (*DiffBatch, error) {
	d := &DiffBatch{}
	err := eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.wire == wireVarint:
			d.SubscriberID = SubscriberID(f.v)
		case f.num == 2 && f.wire == wireVarint:
			d.Sequence = f.v
		case f.num == 3 && f.wire == wireVarint:
			d.Snapshot = f.v != 0
		case f.num == 4 && f.wire == wireBytes:
			u, err := decodeUserState(f.b)
			if err != nil {
				return fmt.Errorf("DiffBatch.users: %w", err)
			}
			d.Users = append(d.Users, u)
		case f.num == 5 && f.wire == wireBytes:
			t, err := decodeTopicSection(f.b)
			if err != nil {
				return fmt.Errorf("DiffBatch.topics: %w", err)
			}
			d.Topics = append(d.Topics, t)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

func decodeUserState(b []byte) (UserState, error) {
	var u UserState
	err := eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.wire == wireBytes:
			u.UserID = string(f.b)
		case f.num == 2 && f.wire == wireVarint:
			u.State = State(int32(f.v))
		case f.num == 3 && f.wire == wireVarint:
			u.LastSeenMs = int64(f.v)
		case f.num == 4 && f.wire == wireVarint:
			u.Version = f.v
		case f.num == 5 && f.wire == wireBytes:
			if err := mergeDeviceSummary(&u.Devices, f.b); err != nil {
				return fmt.Errorf("UserState.devices: %w", err)
			}
		case f.num == 6 && f.wire == wireVarint:
			u.Removed = f.v != 0
		}
		return nil
	})
	return u, err
}

func mergeDeviceSummary(d *DeviceSummary, b []byte) error {
	return eachField(b, func(f field) error {
		if f.wire != wireVarint {
			return nil
		}
		switch f.num {
		case 1:
			d.Web = uint32(f.v)
		case 2:
			d.Desktop = uint32(f.v)
		case 3:
			d.Mobile = uint32(f.v)
		case 4:
			d.Console = uint32(f.v)
		case 5:
			d.Other = uint32(f.v)
		}
		return nil
	})
}

func decodeTopicSection(b []byte) (TopicSection, error) {
	var t TopicSection
	err := eachField(b, func(f field) error {
		switch {
		case f.num == 1 && f.wire == wireBytes:
			t.Topic = string(f.b)
		case f.num == 2 && f.wire == wireVarint:
			t.Full = f.v != 0
		case f.num == 3 && f.wire == wireBytes:
			u, err := decodeUserState(f.b)
			if err != nil {
				return fmt.Errorf("TopicSection.users: %w", err)
			}
			t.Users = append(t.Users, u)
		case f.num == 4 && f.wire == wireBytes:
			if t.Counts == nil {
				t.Counts = &TopicCounts{}
			}
			if err := mergeTopicCounts(t.Counts, f.b); err != nil {
				return fmt.Errorf("TopicSection.counts: %w", err)
			}
		case f.num == 5 && f.wire == wireVarint:
			t.Left = f.v != 0
		}
		return nil
	})
	return t, err
}

func mergeTopicCounts(c *TopicCounts, b []byte) error {
	return eachField(b, func(f field) error {
		if f.wire != wireVarint {
			return nil
		}
		switch f.num {
		case 1:
			c.Online = uint32(f.v)
		case 2:
			c.Away = uint32(f.v)
		case 3:
			c.DND = uint32(f.v)
		case 4:
			c.Offline = uint32(f.v)
		}
		return nil
	})
}

// ---- The protobuf wire format: just enough to read the messages above ----

const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

type reader struct {
	b   []byte
	pos int
}

type field struct {
	num  uint64
	wire int
	v    uint64 // a varint's value
	b    []byte // a length-delimited field's bytes (a view into the input)
}

// eachField calls fn with each field of the message b, in order, and stops
// at the first error: of the encoding, or one that fn returns.
func eachField(b []byte, fn func(f field) error) error {
	r := reader{b: b}
	for !r.done() {
		f, err := r.field()
		if err != nil {
			return err
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if r.pos >= len(r.b) {
			return 0, fmt.Errorf("%w: truncated varint at byte %d", ErrMalformed, r.pos)
		}
		c := r.b[r.pos]
		r.pos++
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: varint longer than 10 bytes at byte %d", ErrMalformed, r.pos)
}

func (r *reader) field() (field, error) {
	key, err := r.varint()
	if err != nil {
		return field{}, err
	}
	f := field{num: key >> 3, wire: int(key & 7)}
	if f.num == 0 {
		return f, fmt.Errorf("%w: field number 0 at byte %d", ErrMalformed, r.pos)
	}
	switch f.wire {
	case wireVarint:
		f.v, err = r.varint()
		return f, err
	case wireFixed64, wireFixed32:
		n := 8
		if f.wire == wireFixed32 {
			n = 4
		}
		if len(r.b)-r.pos < n {
			return f, fmt.Errorf("%w: truncated fixed field at byte %d", ErrMalformed, r.pos)
		}
		r.pos += n
		return f, nil
	case wireBytes:
		n, err := r.varint()
		if err != nil {
			return f, err
		}
		if n > uint64(len(r.b)-r.pos) {
			return f, fmt.Errorf("%w: field %d claims %d bytes, %d left", ErrMalformed, f.num, n, len(r.b)-r.pos)
		}
		f.b = r.b[r.pos : r.pos+int(n)]
		r.pos += int(n)
		return f, nil
	}
	return f, fmt.Errorf("%w: wire type %d (field %d) not supported", ErrMalformed, f.wire, f.num)
}
