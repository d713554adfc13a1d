// Bounded TCP SYN flood for bench/xdp.sh: sends crafted Ethernet/IPv4/TCP SYN frames on one
// interface through an AF_PACKET socket (sendmmsg batches), varying the source port, until a
// packet count or a time limit is reached. Prints the packets sent, the seconds, and the CPU
// seconds this process used (user + system; on a veth the receive softirq that runs inline on
// this CPU is charged here with tick-based accounting).
//
// usage: xdp-flood IFACE DST_MAC SRC_MAC SRC_IP DST_IP DPORT COUNT SECONDS
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME 54

static int parse_mac(const char *s, uint8_t *out)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &out[0], &out[1], &out[2], &out[3],
		      &out[4], &out[5]) == 6 ? 0 : -1;
}

static uint16_t csum(const void *data, size_t len, uint32_t sum)
{
	const uint8_t *p = data;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void build(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t sip, uint32_t dip,
		  uint16_t sport, uint16_t dport, uint32_t seq)
{
	memset(f, 0, FRAME);
	memcpy(f, dmac, 6);
	memcpy(f + 6, smac, 6);
	f[12] = 0x08;
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	ip[3] = 40;
	ip[6] = 0x40; // DF
	ip[8] = 64;
	ip[9] = 6;
	memcpy(ip + 12, &sip, 4);
	memcpy(ip + 16, &dip, 4);
	uint16_t c = htons(csum(ip, 20, 0));
	memcpy(ip + 10, &c, 2);
	uint8_t *tcp = ip + 20;
	uint16_t sp = htons(sport), dp = htons(dport);
	uint32_t sq = htonl(seq);
	memcpy(tcp, &sp, 2);
	memcpy(tcp + 2, &dp, 2);
	memcpy(tcp + 4, &sq, 4);
	tcp[12] = 5 << 4;
	tcp[13] = 0x02; // SYN
	tcp[14] = 0xff;
	tcp[15] = 0xff;
	uint8_t pseudo[12];
	memcpy(pseudo, &sip, 4);
	memcpy(pseudo + 4, &dip, 4);
	pseudo[8] = 0;
	pseudo[9] = 6;
	pseudo[10] = 0;
	pseudo[11] = 20;
	uint32_t sum = 0;
	for (int i = 0; i < 12; i += 2)
		sum += (uint32_t)pseudo[i] << 8 | pseudo[i + 1];
	uint16_t tc = htons(csum(tcp, 20, sum));
	memcpy(tcp + 16, &tc, 2);
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: %s IFACE DST_MAC SRC_MAC SRC_IP DST_IP DPORT COUNT SECONDS\n",
			argv[0]);
		return 2;
	}
	uint8_t dmac[6], smac[6];
	struct in_addr sip, dip;
	if (parse_mac(argv[2], dmac) || parse_mac(argv[3], smac) ||
	    inet_pton(AF_INET, argv[4], &sip) != 1 || inet_pton(AF_INET, argv[5], &dip) != 1) {
		fprintf(stderr, "bad address argument\n");
		return 2;
	}
	int dport = atoi(argv[6]);
	long long count = atoll(argv[7]);
	double seconds = atof(argv[8]);
	if (dport <= 0 || dport > 65535 || count <= 0 || seconds <= 0 || seconds > 120) {
		fprintf(stderr, "bad port, count or seconds (at most 120)\n");
		return 2;
	}
	int ifindex = if_nametoindex(argv[1]);
	if (!ifindex) {
		perror("if_nametoindex");
		return 1;
	}
	int fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (fd < 0) {
		perror("socket(AF_PACKET)");
		return 1;
	}
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = ifindex, .sll_halen = 6 };
	memcpy(sll.sll_addr, dmac, 6);

	static uint8_t frames[BATCH][FRAME];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = frames[i];
		iov[i].iov_len = FRAME;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &sll;
		msgs[i].msg_hdr.msg_namelen = sizeof(sll);
	}
	long long sent = 0;
	uint32_t n = 0;
	double start = now(), deadline = start + seconds;
	while (sent < count && now() < deadline) {
		int batch = count - sent < BATCH ? (int)(count - sent) : BATCH;
		for (int i = 0; i < batch; i++, n++)
			build(frames[i], dmac, smac, sip.s_addr, dip.s_addr,
			      (uint16_t)(1024 + n % 60000), (uint16_t)dport, n * 7919u);
		int r = sendmmsg(fd, msgs, batch, 0);
		if (r < 0) {
			perror("sendmmsg");
			break;
		}
		sent += r;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
		     ru.ru_stime.tv_usec / 1e6;
	printf("%lld %.3f %.3f\n", sent, now() - start, cpu);
	close(fd);
	return 0;
}
