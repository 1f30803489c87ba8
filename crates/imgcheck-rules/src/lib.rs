//! Provider rule profiles for imgcheck: findings and verdicts for DigitalOcean, Linode and KakaoCloud
