//! The SDP that WHIP and WHEP handle as text: candidates put into an answer (WHIP clients do not
//! wait for trickle), trickled fragments read, and the offer and answer fragment of an ICE
//! restart.

/// `offer` with new ICE credentials, without its old candidates (the restart's fragment brings
/// the new ones) and with the next session version.
pub(super) fn restarted_offer(offer: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(offer.len());
    for line in offer.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else if let Some(origin) = line.strip_prefix("o=") {
            let mut fields: Vec<&str> = origin.split(' ').collect();
            let next = fields
                .get(2)
                .and_then(|v| v.parse::<u64>().ok()?.checked_add(1))
                .map(|v| v.to_string());
            if let Some(next) = &next {
                fields[2] = next;
            }
            out.push_str("o=");
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The answer to an ICE restart as an SDP fragment (RFC 8840): the server's ICE credentials,
/// then the first (bundled) media section with its candidates.
pub(super) fn answer_fragment(answer: &str) -> String {
    let mut out = String::new();
    for name in ["ice-ufrag", "ice-pwd"] {
        if let Some(v) = ice_attribute(answer, name) {
            out.push_str(&format!("a={name}:{v}\r\n"));
        }
    }
    let section = answer
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| !l.starts_with("m="))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.starts_with("m="))
        .map(|(_, l)| l);
    for line in section {
        if line.starts_with("m=")
            || line.starts_with("a=mid:")
            || line.starts_with("a=candidate:")
            || line == "a=end-of-candidates"
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}
/// The value of the first `a=<name>:` line.
pub(super) fn ice_attribute(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .map(|v| v.trim().to_owned())
}

/// `sdp` with `a=candidate` lines in every media section that has none, and every media section
/// ending its candidates (`a=end-of-candidates`): the server gathers nothing later.
pub(super) fn with_candidates(sdp: &str, candidates: &[String]) -> String {
    #[derive(Default)]
    struct Section {
        media: bool,
        candidates: bool,
        ended: bool,
    }
    let finish = |out: &mut String, section: &Section| {
        if !section.media {
            return;
        }
        if !section.candidates {
            for c in candidates {
                let c = c.strip_prefix("candidate:").unwrap_or(c);
                out.push_str("a=candidate:");
                out.push_str(c);
                out.push_str("\r\n");
            }
        }
        if !section.ended {
            out.push_str("a=end-of-candidates\r\n");
        }
    };
    let mut out = String::with_capacity(sdp.len() + candidates.len() * 80 * 4);
    let mut section = Section::default();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            finish(&mut out, &section);
            section = Section {
                media: true,
                ..Section::default()
            };
        } else if line.starts_with("a=candidate:") {
            section.candidates = true;
        } else if line == "a=end-of-candidates" {
            section.ended = true;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    finish(&mut out, &section);
    out
}

/// The candidates of a trickle-ice-sdpfrag body (RFC 8840), each with the mid of its section.
pub(super) fn parse_sdpfrag(frag: &str) -> Result<Vec<sfu::Candidate>, String> {
    let mut mid: Option<String> = None;
    let mut ufrag: Option<String> = None;
    let mut out = Vec::new();
    for line in frag.lines() {
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim().to_owned());
        } else if line.starts_with("m=") {
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            if v.split_whitespace().count() < 8 {
                return Err(format!("malformed candidate line: {line}"));
            }
            out.push(sfu::Candidate {
                candidate: format!("candidate:{v}"),
                sdp_mid: mid.clone(),
                sdp_mline_index: if mid.is_none() { Some(0) } else { None },
                username_fragment: ufrag.clone(),
            });
        } else if line.is_empty()
            || line == "a=end-of-candidates"
            || line.starts_with("a=")
            || line.starts_with("m=")
        {
        } else {
            return Err(format!("not an SDP fragment line: {line}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_go_into_every_media_section() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";
        let c = vec!["candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host".to_owned()];
        let out = with_candidates(sdp, &c);
        assert_eq!(out.matches("a=candidate:1 1 udp").count(), 2, "{out}");
        assert_eq!(out.matches("a=end-of-candidates").count(), 2);
        let video = out.find("m=video").unwrap();
        assert!(out[..video].contains("a=candidate:"), "{out}");
        assert!(!out.contains("a=candidate:candidate:"));
        // A section that has candidates keeps its own and gets only the end marker.
        let again = with_candidates(&out, &c);
        assert_eq!(again.matches("a=candidate:1 1 udp").count(), 2, "{again}");
        assert_eq!(again.matches("a=end-of-candidates").count(), 2);
    }

    #[test]
    fn sdpfrag_candidates_carry_their_mid_and_ufrag() {
        let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
                    a=end-of-candidates\r\n";
        let c = parse_sdpfrag(frag).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].sdp_mid.as_deref(), Some("0"));
        assert_eq!(c[0].username_fragment.as_deref(), Some("EsAw"));
        assert!(c[0].candidate.starts_with("candidate:1387637174 1 udp"));
        assert!(parse_sdpfrag("a=candidate:1 1 udp\r\n").is_err());
        assert!(parse_sdpfrag("hello\r\n").is_err());
    }
}
