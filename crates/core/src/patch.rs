//! JSON merge patch (RFC 7396), JSON patch (RFC 6902) and strategic merge patch.
