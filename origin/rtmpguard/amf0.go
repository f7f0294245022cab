package rtmpguard

import (
	"encoding/binary"
	"fmt"
)

// AMF0 markers (AMF0 specification, section 2.1).
const (
	amf0Number      = 0x00
	amf0Boolean     = 0x01
	amf0String      = 0x02
	amf0Object      = 0x03
	amf0Null        = 0x05
	amf0Undefined   = 0x06
	amf0ECMAArray   = 0x08
	amf0ObjectEnd   = 0x09
	amf0StrictArray = 0x0a
	amf0Date        = 0x0b
)

// amfLimits bounds what ValidateAMF0 accepts.
type amfLimits struct {
	maxDepth  int
	maxValues int
}

// ValidateAMF0 checks that b is a sequence of well-formed AMF0 values that
// go-amf0 can decode without unbounded allocation or recursion: nesting at
// most maxDepth, at most maxValues values in all, every declared length and
// count backed by bytes actually present. Markers go-amf0 cannot decode
// (references, long strings, typed objects, XML, AMF3 switch, ...) are
// rejected here so the library never sees them.
func ValidateAMF0(b []byte, maxDepth, maxValues int) error {
	v := amfValidator{b: b, lim: amfLimits{maxDepth: maxDepth, maxValues: maxValues}}
	for v.off < len(v.b) {
		if err := v.value(1); err != nil {
			return err
		}
	}
	return nil
}

type amfValidator struct {
	b      []byte
	off    int
	values int
	lim    amfLimits
}

func (v *amfValidator) need(n int) error {
	if n < 0 || len(v.b)-v.off < n {
		return fmt.Errorf("%w: AMF0 value needs %d bytes, %d left", ErrMalformedAMF, n, len(v.b)-v.off)
	}
	return nil
}

func (v *amfValidator) value(depth int) error {
	if depth > v.lim.maxDepth {
		return fmt.Errorf("%w: AMF0 nesting deeper than %d", ErrAMFLimit, v.lim.maxDepth)
	}
	v.values++
	if v.values > v.lim.maxValues {
		return fmt.Errorf("%w: more than %d AMF0 values", ErrAMFLimit, v.lim.maxValues)
	}
	if err := v.need(1); err != nil {
		return err
	}
	marker := v.b[v.off]
	v.off++
	switch marker {
	case amf0Number:
		return v.skip(8)
	case amf0Boolean:
		return v.skip(1)
	case amf0String:
		return v.shortString()
	case amf0Null, amf0Undefined:
		return nil
	case amf0Date:
		return v.skip(10)
	case amf0Object:
		return v.properties(depth)
	case amf0ECMAArray:
		// The count is a hint only; properties end with the end marker.
		if err := v.skip(4); err != nil {
			return err
		}
		return v.properties(depth)
	case amf0StrictArray:
		if err := v.need(4); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(v.b[v.off:])
		v.off += 4
		// Every element takes at least its marker byte: a count larger
		// than the bytes left is a lie meant to force a huge allocation.
		if uint64(n) > uint64(len(v.b)-v.off) {
			return fmt.Errorf("%w: strict array declares %d entries with %d bytes left", ErrAMFLimit, n, len(v.b)-v.off)
		}
		for i := uint32(0); i < n; i++ {
			if err := v.value(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case amf0ObjectEnd:
		return fmt.Errorf("%w: object end marker outside an object", ErrMalformedAMF)
	default:
		return fmt.Errorf("%w: AMF0 marker %#x not accepted", ErrMalformedAMF, marker)
	}
}

func (v *amfValidator) skip(n int) error {
	if err := v.need(n); err != nil {
		return err
	}
	v.off += n
	return nil
}

func (v *amfValidator) shortString() error {
	if err := v.need(2); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(v.b[v.off:]))
	v.off += 2
	return v.skip(n)
}

// properties walks key/value pairs up to the 0x00 0x00 0x09 end marker.
func (v *amfValidator) properties(depth int) error {
	for {
		if err := v.need(3); err != nil {
			return err
		}
		if v.b[v.off] == 0 && v.b[v.off+1] == 0 && v.b[v.off+2] == amf0ObjectEnd {
			v.off += 3
			return nil
		}
		if err := v.shortString(); err != nil {
			return err
		}
		if err := v.value(depth + 1); err != nil {
			return err
		}
	}
}
