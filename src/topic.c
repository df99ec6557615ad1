#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "topic.h"

static bool filter_compile(struct topic_filter *f, const char *text, char *err, size_t errlen)
{
	memset(f, 0, sizeof(*f));
	f->text = strdup(text);
	if(!f->text){
		snprintf(err, errlen, "out of memory");
		return false;
	}
	const char *p = f->text;
	for(;;){
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if(f->hash){
			snprintf(err, errlen, "'%s': '#' must be the last level", text);
			return false;
		}
		if(f->nlevels == TOPIC_MAX_LEVELS){
			snprintf(err, errlen, "'%s' has more than %d levels", text, TOPIC_MAX_LEVELS);
			return false;
		}
		if(len == 1 && *p == '#'){
			f->hash = true;
		}else{
			if(memchr(p, '#', len) || (memchr(p, '+', len) && len != 1)){
				snprintf(err, errlen, "'%s': '+' and '#' must fill a whole level", text);
				return false;
			}
			struct topic_level *l = &f->levels[f->nlevels++];
			l->s = (len == 1 && *p == '+') ? NULL : p;
			l->len = len;
		}
		if(!end) break;
		p = end + 1;
	}
	return true;
}

bool topic_set_parse(struct topic_set *set, const char *filters, char *err, size_t errlen)
{
	memset(set, 0, sizeof(*set));
	char *copy = strdup(filters), *save = NULL;
	if(!copy){
		snprintf(err, errlen, "out of memory");
		return false;
	}
	for(char *tok = strtok_r(copy, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)){
		if(set->n == TOPIC_MAX_FILTERS){
			snprintf(err, errlen, "more than %d filters", TOPIC_MAX_FILTERS);
			goto failed;
		}
		if(tok[0] == '$'){
			snprintf(err, errlen, "'%s': topics starting with '$' are the broker's own", tok);
			goto failed;
		}
		if(!filter_compile(&set->f[set->n++], tok, err, errlen)) goto failed;
	}
	free(copy);
	if(set->n == 0){
		snprintf(err, errlen, "no topic filter given");
		return false;
	}
	return true;
failed:
	free(copy);
	topic_set_free(set);
	return false;
}

static bool filter_match(const struct topic_filter *f, const char *topic)
{
	const char *p = topic;
	for(size_t i = 0; i < f->nlevels; i++){
		if(!p) return false;    /* topic has fewer levels */
		const char *end = strchr(p, '/');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const struct topic_level *l = &f->levels[i];
		if(l->s && (l->len != len || memcmp(l->s, p, len))) return false;
		p = end ? end + 1 : NULL;
	}
	return p == NULL || f->hash;
}

bool topic_set_match(const struct topic_set *set, const char *topic)
{
	if(topic[0] == '$') return false;   /* wildcards never match $SYS and friends */
	for(size_t i = 0; i < set->n; i++){
		if(filter_match(&set->f[i], topic)) return true;
	}
	return false;
}

bool topic_level(const char *topic, int level, char *out, size_t outlen)
{
	if(level < 0) return false;
	const char *p = topic;
	for(int i = 0; i < level; i++){
		p = strchr(p, '/');
		if(!p) return false;
		p++;
	}
	const char *end = strchr(p, '/');
	size_t len = end ? (size_t)(end - p) : strlen(p);
	if(len == 0 || len >= outlen) return false;
	memcpy(out, p, len);
	out[len] = '\0';
	return true;
}

void topic_set_free(struct topic_set *set)
{
	for(size_t i = 0; i < set->n; i++) free(set->f[i].text);
	set->n = 0;
}
