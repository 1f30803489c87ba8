//! Thin upload backends for imgcheck: DigitalOcean, Linode, KakaoCloud
