#!/usr/bin/env python3
"""Generates templates.rs (beside this script) from the real Asterisk 22 captures.

Each template is the event sequence Asterisk sent for one call outcome, with the call's
identity replaced by placeholders. Run from the crate root:
    python3 scripts/gen_pbx_templates.py ../shared/ami-transcripts > src/pbx_sim/templates.rs
"""
import re, sys, os

D = sys.argv[1]

def blocks(path):
    out = []
    for blk in open(path).read().split('\n\n'):
        lines = [l for l in blk.split('\n') if l and not l.startswith('#')]
        if not lines:
            continue
        hdr = lines[0]
        out.append((hdr[:3], float(hdr.split('=')[1]), lines[1:]))
    return out

def extract(fname, after_hangup_action=False, from_t=None):
    bs = blocks(os.path.join(D, fname))
    # find the Originate
    i = next(k for k, b in enumerate(bs) if b[0] == '>>>' and b[2][0] == 'Action: Originate')
    orig = dict(l.split(': ', 1) for l in bs[i][2])
    t0 = bs[i][1]
    start = i + 2  # skip the 'Originate successfully queued' response
    if after_hangup_action:
        j = next(k for k, b in enumerate(bs) if b[0] == '>>>' and b[2][0] == 'Action: Hangup')
        start = j + 2
        t0 = bs[j][1]
    if from_t is not None:
        # An operator command (not on the wire): the events from its time on.
        start = next(k for k, b in enumerate(bs) if b[1] >= from_t)
        t0 = from_t
    evs = []
    # Everything Asterisk sent after the Originate, to learn the call's names and ids.
    seen = [lines for d, t, lines in bs[i + 1:] if d == '<<<']
    for d, t, lines in bs[start:]:
        if d == '>>>':
            break
        if lines[0].startswith('Response') or lines[0] == 'Event: Shutdown':
            continue
        evs.append((t - t0, lines))
    return orig, evs, seen

def subst(orig, evs, name, seen):
    chan_req = orig['Channel']
    num = re.search(r'<(\d+)>', orig['CallerID']).group(1)
    cname = re.search(r'"([^"]+)"', orig['CallerID']).group(1)
    aid = orig['ActionID']
    uids = []
    chan_real = None
    for lines in seen:
        d = dict(l.split(': ', 1) if ': ' in l else (l[:-1], '') for l in lines)
        if lines[0] == 'Event: Newchannel':
            uids.append(d['Uniqueid'])
            chan_real = d['Channel'].rsplit(';', 1)[0]
    m = re.match(r'Local/([^@]+)@(.+)$', chan_req)
    exten = m.group(1) if m else None
    out = []
    for t, lines in evs:
        res = []
        flags = ''
        for l in lines:
            k, _, v = l.partition(': ')
            if k == 'ActionID':
                v = '{ACTIONID}' if v == aid else v
            elif lines[0] == 'Event: OriginateResponse' and k == 'Uniqueid' and v == '<unknown>':
                # Failed originate: `<unknown>`, or the ChannelId when one was requested.
                v = '{FAILUID}'
            elif k in ('StartTime',):
                v = '{START}'
            elif k == 'AnswerTime':
                v = '{ANSWERED}' if v else ''
            elif k == 'EndTime':
                v = '{END}'
            elif k in ('Duration', 'BillableSeconds'):
                v = '{DUR}' if (k == 'Duration' or v != '0') else '0'
                if k == 'BillableSeconds' and not [x for x in lines if x.startswith('AnswerTime: 2')]:
                    v = '0'
                elif k == 'BillableSeconds':
                    v = '{BILL}'
            elif lines[0] == 'Event: OriginateResponse' and k == 'Application' and 'Application' in orig:
                v = '{LAPP}'
            elif lines[0] == 'Event: OriginateResponse' and k == 'Data' and 'Data' in orig:
                v = '{LDATA}'
            elif lines[0] == 'Event: Cdr' and k == 'LastApplication' and v == orig.get('Application'):
                v = '{LAPP}'
            elif lines[0] == 'Event: Cdr' and k == 'LastData' and v == orig.get('Data') and any(x == 'LastApplication: ' + orig.get('Application', '') for x in lines):
                v = '{LDATA}'
            elif k in ('Exten', 'Extension', 'Destination') and v == orig.get('Exten') and orig.get('Exten') != exten:
                v = '{LEXTEN}'
            elif k in ('Context', 'DestinationContext') and v == orig.get('Context'):
                v = '{LCTX}'
            elif lines[0] == 'Event: VarSet' and k == 'Variable' and v == 'DIALER_JOB_ID':
                v = '{VARNAME}'; flags = 'V'
            elif lines[0] == 'Event: VarSet' and k == 'Value' and flags == 'V':
                v = '{VARVALUE}'
            else:
                if chan_real:
                    v = v.replace(chan_real, '{CHAN}')
                if v == chan_req or v == chan_req.split(';')[0]:
                    v = '{REQ}'
                for idx, u in enumerate(uids):
                    v = re.sub(r'(?<![\d.])' + re.escape(u) + r'(?![\d])', '{UID%d}' % (idx + 1), v)
                v = v.replace(cname, '{NAME}')
                v = re.sub(r'(?<!\d)' + num + r'(?!\d)', '{NUM}', v)
                v = v.replace('job={NUM}', 'job={JOB}')
                # Cause-txt is Asterisk's own text ("User busy"), never the extension.
                if exten and k != 'Cause-txt':
                    v = re.sub(r'(?<![A-Za-z-])' + re.escape(exten) + r'(?![A-Za-z-])', '{EXTEN}', v)
                    m2 = re.match(r'Local/([^@]+)@(.+)$', chan_req)
                    v = re.sub(r'(?<![A-Za-z])@' + re.escape(m2.group(2)) + r'\b', '@{CTX}', v)
                    if k in ('Context', 'DestinationContext', 'LocalOneContext', 'LocalTwoContext', 'DestContext') and v == m2.group(2):
                        v = '{CTX}'
            res.append(k + ': ' + v if _ or v else k + ':' if False else (k + ': ' + v))
        out.append((t, flags, res))
    # cluster into phases
    phases = []
    last = None
    ph = -1
    final = []
    for t, flags, res in out:
        if last is None or t - last > 0.15:
            ph += 1
            phases.append(int(round(t * 1000)))
        last = t
        final.append((ph, flags, res))
    return phases, final

def emit(tname, fname, after=False, from_t=None):
    orig, evs, seen = extract(fname, after, from_t)
    phases, final = subst(orig, evs, tname, seen)
    txt = []
    for ph, flags, res in final:
        txt.append('@%d%s\n' % (ph, flags) + '\n'.join(res) + '\n')
    body = '\n'.join(txt)
    ident = tname.upper().replace('-', '_')
    note = ' (after the client\'s Hangup action)' if after else (' (from t=%s on)' % from_t if from_t is not None else '')
    print('/// From `%s`%s.' % (fname, note))
    print('pub(super) const %s: Template = Template {' % ident)
    print('    name: "%s",' % tname)
    print('    source: "%s",' % fname)
    print('    phases_ms: &%r,' % (phases,))
    print('    text: r#"' + body + '"#,')
    print('};')
    print()

print('//! Event sequences taken from the real Asterisk 22 captures (generated by')
print('//! `scripts/gen_pbx_templates.py`; edit the generator, not this file). Placeholders in braces')
print('//! are filled per call; `@N` starts an event of phase N; `@NV` marks the per-variable VarSet.')
print()
print('#[allow(dead_code)] // name/source/phases_ms document provenance and capture timing')
print('pub(super) struct Template {')
print('    pub name: &\'static str,')
print('    pub source: &\'static str,')
print('    /// Capture offsets of each phase from the Originate (or the Hangup action), in ms.')
print('    pub phases_ms: &\'static [u64],')
print('    pub text: &\'static str,')
print('}')
print()
emit('answer', 'answer.txt')
emit('slow-answer', 'slow-answer.txt')
emit('busy', 'busy.txt')
emit('congestion', 'congestion.txt')
emit('noanswer', 'noanswer.txt')
emit('reject', 'reject.txt')
emit('invalid-tech', 'invalid-tech.txt')
emit('nonexistent', 'nonexistent-exten.txt')
emit('cancel-ringing', 'dialer-cancels-ringing.txt', True)
emit('cancel-answered', 'dialer-hangs-up-answered.txt', True)
emit('long-answer', 'probe-channelid-show.txt')
emit('hangup-ringing-leg2', 'probe-hangup-ringing-leg2.txt', True)
emit('application', 'probe-application.txt')
emit('landing-hangs-up', 'landing-hangs-up.txt')
emit('shutdown-now', 'shutdown-stop-now.txt', from_t=2.806)
